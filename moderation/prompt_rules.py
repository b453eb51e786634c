"""Compositional rules for the prompt gate: harm that no single word carries.

Every rule reads normalised text (see `moderation.normalize`) and the tags the term lists found in it, and
each has a name that moderators see. Positive-prompt rules:

- `minors+sexual`: a word for a minor (or an age under 18) together with a sexual or suggestive word.
- `hate-violence`, `hate-dehumanising`, `hate-as-animals`, `hate-should-die`: violence called for against a
  protected group ("kill all <group>"), or the group called vermin, drawn as animals, wished dead.
- `harassment-targeted`: a private person ("my classmate", "this girl from my school", a Discord @mention)
  together with a humiliating, insulting or threatening word.
- `illicit-instructions`: instructions, recipes or blueprints ("how to make", "step by step", "schematic")
  for a weapon, explosive, drug or forgery.
- `illicit-crime-howto`: "how to poison someone", "... without getting caught".
- `illicit-forgery`: counterfeit or fake money, passports, IDs, prescriptions.
- `illicit-drug-sale`: selling or dealing named illegal drugs.
- `graphic-injury`: a person torn apart, eaten alive, cut open; cannibalism.
- `hate-exclusion`: "no <group> allowed", "<group> go home".
- `self-harm-instructions`: "how to hurt myself", "best way to die".

Negative prompts are what a user wants to *avoid*, so the term lists are not applied to them ("nsfw, nude,
blurry" is the most common negative there is). They are read only for inversion: asking the model to avoid
the thing that would keep an image safe. Each item of the negative (split on commas, semicolons, "|" and new
lines) counts only when it consists of nothing but the rule's words and joiners ("clothes and underwear"
counts; "modern clothes", "wrinkled clothes" and "no clothes" do not):

- `negative-clothing` → sexual: two different clothing or modesty items ("clothes, underwear"), "sfw", or
  one of the strong items (clothes, clothing, dressed, covered, censored...) when the prompt shows a person.
- `negative-adult` → sexual/minors: adulthood items (adult, mature, grown up, old...) when the prompt is
  sexual or suggestive or the negative strips clothing; or, with a person in the prompt that it does not
  call an adult, two or more adulthood items of which one says "adult" outright.
- `negative-harm` → violence/graphic: two or more items asking to avoid the person being alive or unhurt
  (alive, unharmed, intact...) when the prompt shows a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from moderation.normalize import normalize


@dataclass(frozen=True)
class Finding:
    """One reason to refuse: the category, the layer that found it and, for moderators only, which term or rule."""

    category: str
    layer: str
    detail: str


def _alternation(phrases: Iterable[str]) -> str:
    """A regex alternation of normalised phrases, longest first, each with an optional plural ending."""
    cleaned = sorted({p for p in phrases if p}, key=len, reverse=True)
    return "(?:" + "|".join(re.escape(p) for p in cleaned) + ")(?:s|es)?" if cleaned else "(?!)"


_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen"
)
_UNDER_18 = rf"(?:[1-9]|1[0-7]|{_NUMBER_WORDS})"
MINOR_AGE = re.compile(
    rf"\b{_UNDER_18} ?(?:yo|y o|yr old|yrs old|year old|years old|year olds)\b|\baged? {_UNDER_18}\b"
)

_HATE_VERB = (
    r"(?:kill|killing|murder|murdering|exterminate|exterminating|extermination of|eradicate|eradicating|"
    r"genocide of|genocide against|gas|gassing|lynch|lynching|slaughter|slaughtering|wipe out|wiping out|"
    r"death to|get rid of all|purge|purging|eliminate all|ethnically cleanse|burn all|deport and kill)"
)
_HATE_PREDICATE = (
    r"(?:vermin|rats|cockroaches|roaches|parasites|animals|apes|monkeys|subhuman|sub human|subhumans|inferior|"
    r"an inferior race|filth|filthy|a disease|disease|a plague|plague|savages|terrorists|criminals|rapists|thieves|"
    r"evil|mentally ill|dirty|scum|trash|garbage|not human|pigs|dogs|insects|a cancer|cancer|demons|abominations|"
    r"an abomination|invaders|degenerates|lesser beings|worthless|stupid|groomers|pedophiles|freaks|perverts|"
    r"sick perverts|sick|less intelligent|inferior beings)"
)
_ANIMALS = r"(?:apes|monkeys|rats|pigs|vermin|cockroaches|insects|dogs|animals|subhumans|parasites|gorillas)"
_SHOULD_DIE = (
    r"(?:should|must|deserve to|need to|ought to|have to|will) (?:all )?(?:be )?"
    r"(?:die|killed|exterminated|gassed|burned|shot|hanged|lynched|wiped out|eradicated|deported and killed)"
)

_TARGET = re.compile(
    r"\b(?:my|our) (?:\w+ )?(?:classmate|classmates|class mate|coworker|coworkers|co worker|colleague|colleagues|boss|"
    r"teacher|professor|neighbour|neighbor|neighbours|neighbors|ex|ex girlfriend|ex boyfriend|ex wife|ex husband|"
    r"girlfriend|boyfriend|roommate|flatmate|sister|brother|cousin|stepmom|stepdad|stepmother|stepfather|"
    r"manager|tutor|landlord|crush|step sister|step brother|bully)\b"
    r"|\b(?:this|that|a specific|one) (?:girl|guy|boy|kid|person|woman|man|student|teacher) (?:from|at|in) (?:my|our)\b"
    r"|\bsomeone (?:from|at|in) (?:my|our)\b|\bkid in (?:my|our) class\b"
)
_MENTION = re.compile(r"<@!?\d+>|(?<![\w.])@[A-Za-z0-9_.]{2,32}")  # a Discord mention, or an @handle
_HARASS = re.compile(
    r"\b(?:humiliat\w*|mock|mocks|mocked|mocking|ridicul\w*|bully|bullying|bullied|harass\w*|embarrass\w*|"
    r"shame|shaming|shamed|insult\w*|threat|threats|threaten\w*|make fun of|making fun of|worthless|loser|losers|"
    r"disgusting|stupid|idiot|moron|fat pig|ugly pig|fat and ugly|ugly and fat|pathetic|freak|go die|should die|"
    r"must die|deserves to die|kill him|kill her|kill them|beat up|beaten up|beating up|punched|stabbed|spit on|"
    r"whore|slut|bitch|hated by everyone|everyone hates|nobody likes|home address|cheating pig|rat face|pig face)\b"
)

_ILLICIT_CUE = (
    r"(?:how to (?:make|build|cook|synthesi[sz]e|produce|create|manufacture|assemble|brew|get|buy|obtain|use)|"
    r"how do i (?:make|build|cook|get|buy)|recipe for|recipe of|instructions for|instructions to|instructions on|"
    r"step by step|tutorial|guide to|guide for|guide on|diagram of|diagram showing|blueprint for|blueprint of|"
    r"blueprints|schematic|schematics|ingredients for|ingredients of|making (?:a|an|your own)|"
    r"building (?:a|an|your own)|homemade|home made|diy)"
)
_ILLICIT_ITEM = (
    r"(?:bomb|bombs|explosive|explosives|ied|ieds|grenade|grenades|detonator|napalm|thermite|nerve gas|nerve agent|"
    r"sarin|ricin|anthrax|poison gas|chlorine gas|mustard gas|meth|methamphetamine|crystal meth|heroin|cocaine|"
    r"crack cocaine|fentanyl|lsd|mdma|silencer|suppressor|ghost gun|untraceable gun|machine gun conversion|"
    r"auto sear|full auto conversion|molotov|counterfeit \w+|fake money|fake id|fake passport|ransomware|malware|"
    r"computer virus|keylogger|phishing \w+|poison (?:someone|a person|my \w+|him|her|people)|stolen credit cards?|"
    r"skimmer|hotwire a car|break into a house|shoplift|shoplifting|launder money|untraceable poison)"
)
_ILLICIT = re.compile(
    rf"\b{_ILLICIT_CUE}(?: \w+){{0,5}}? {_ILLICIT_ITEM}\b"
    rf"|\b{_ILLICIT_ITEM}(?: \w+){{0,3}}? (?:recipe|tutorial|instructions|blueprint|schematic|guide|diagram)\b"
)
_CRIME = re.compile(
    r"\bhow (?:to|do i|can i) (?:poison|kill|murder|kidnap|stalk|rob|mug|hack into|steal from|scam|blackmail|"
    r"smuggle|strangle|drug) (?:someone|somebody|a person|people|my \w+|him|her|them|a bank|a store|a child|kids)\b"
    r"|\b(?:poison|poisoning|kill|killing|murder|murdering|steal|stealing|rob|robbing|smuggle|smuggling|stab|stabbing)"
    r" \w+(?: \w+)? without (?:getting caught|leaving evidence|leaving a trace|a trace|being caught)\b"
)
_DRUG = (
    r"(?:heroin|cocaine|crack cocaine|meth|methamphetamine|crystal meth|fentanyl|mdma|lsd|magic mushrooms|"
    r"psilocybin|oxycodone|oxy|opioids|ketamine|xanax bars)"
)
_DRUG_SALE = re.compile(
    rf"\b(?:sell|sells|selling|sold|for sale|dealing|deal|price list|dark web|darknet|smuggle|smuggling|traffic|"
    rf"trafficking)(?: \w+){{0,4}}? {_DRUG}\b|\b{_DRUG}(?: \w+){{0,4}}? (?:for sale|sell|sells|selling|dealer|dealers|"
    rf"price list|smuggling|on the dark web)\b"
)
_FORGERY = re.compile(
    r"\b(?:counterfeit|forged|forge|forging|fake|falsified)(?: \w+){0,3}? (?:bills|banknotes|bank notes|currency|money|"
    r"dollars|euros|passport|passports|id|ids|id card|id cards|drivers license|driver s license|driving licence|"
    r"license|licence|identity documents|documents|prescription|prescriptions|doctor s note|vaccination card|"
    r"vaccine card|diploma|degree certificate|social security card)\b"
)
_SELF_HARM = re.compile(
    r"\bhow (?:to|do i|can i) (?:kill|hurt|cut|starve|hang|poison|drown|harm) (?:myself|yourself|oneself|ourselves)\b"
    r"|\b(?:best|easiest|painless|quickest|fastest) (?:way|ways|method|methods) to (?:die|commit suicide|end it all|"
    r"end my life|kill myself)\b|\bways to die\b"
)


# Negative-prompt vocabularies (see the module docstring). Strong clothing items mean "no clothes" by themselves.
def _phrases(text: str) -> frozenset[str]:
    return frozenset(p.strip() for p in text.split(",") if p.strip())


_STRONG_CLOTHING = _phrases(
    "clothes, clothing, clothed, dressed, fully clothed, fully dressed, covered, covered up, censored, censorship, "
    "censor bar, mosaic, mosaic censoring, bar censor, underwear, modest, modesty, sfw, safe for work, garments"
)
_CLOTHING = _STRONG_CLOTHING | _phrases(
    "shirt, t shirt, top, pants, trousers, jeans, shorts, skirt, dress, bra, panties, bikini, swimsuit, swimwear, "
    "lingerie, leotard, robe, towel, jacket, coat, sweater, hoodie, blouse, apparel, outfit, uniform"
)
_JOINERS = _phrases("and, or, with, wearing, any, all, a, an, the, of, too much, much, many")
_ADULT_STRONG = _phrases(
    "adult, adults, grown up, grownup, grown, adult woman, adult man, adult body, adult face, adult features, "
    "of age, legal age, over 18, eighteen, aged 18, womanly, manly, adult proportions"
)
_ADULT_WEAK = _phrases("mature, old, older, elderly, aged, milf, wrinkles, wrinkled, wrinkly, middle aged")
_ALIVE = _phrases("alive, living, unharmed, uninjured, unhurt, intact, healthy, whole, bloodless, clean skin")
_SENSUAL_CONTEXT = re.compile(r"\b(?:bikini|swimsuit|bathing suit|shower|bath|bed|bedroom|posing|pose)\b")


def _split_negative(negative: str) -> list[list[str]]:
    """Items of a negative prompt, each as a list of normalised words."""
    items = re.split(r"[,;|\n\r]+|\s+-\s+", negative)
    return [words for words in (normalize(item).split() for item in items) if words]


def _item_terms(words: Sequence[str], vocabulary: frozenset[str]) -> set[str] | None:
    """The vocabulary terms an item consists of (joiners allowed in between), or None if it has anything else."""
    found: set[str] = set()
    i = 0
    while i < len(words):
        for size in (3, 2, 1):
            if i + size > len(words):
                continue
            phrase = " ".join(words[i : i + size])
            singular = phrase[:-1] if phrase.endswith("s") else phrase
            match = phrase if phrase in vocabulary else singular if singular in vocabulary else None
            if match is not None:
                found.add(match)
                i += size
                break
        else:
            if words[i] not in _JOINERS:
                return None
            i += 1
    return found


class RuleSet:
    """The rules, built from the groups and people lists (`groups.txt`, `people.txt`) so deployments can extend them."""

    def __init__(self, groups: Iterable[str], people: Iterable[str] = ()) -> None:
        group = _alternation(normalize(g) for g in groups)
        self._hate = (
            (
                "hate-violence",
                re.compile(rf"\b{_HATE_VERB}(?: (?:all|the|every|those|these|them))*(?: \w+)? {group}\b"),
            ),
            (
                "hate-dehumanising",
                re.compile(
                    rf"\b{group}(?: \w+){{0,2}}? (?:are|is|r|were) (?:(?:all|just|nothing but|like|simply|literally|"
                    rf"basically|no better than|only) )*(?:a |an )?{_HATE_PREDICATE}\b"
                ),
            ),
            ("hate-as-animals", re.compile(rf"\b{group} (?:depicted |drawn |shown |portrayed )?as {_ANIMALS}\b")),
            ("hate-should-die", re.compile(rf"\b{group}(?: \w+)? {_SHOULD_DIE}\b")),
            ("hate-exclusion", re.compile(rf"\bno {group} allowed\b|\b{group} (?:not welcome|go home|get out)\b")),
        )
        person = _alternation(normalize(p) for p in people)
        self._graphic = re.compile(
            rf"\b{person}(?: \w+){{0,3}}? (?:torn apart|ripped apart|blown apart|blown to pieces|eaten alive|cut open|"
            rf"being eaten|skinned|torn to pieces|ripped to shreds)\b"
            r"|\beating (?:a |the )?(?:person|people|human|humans|man|woman|child|body)(?: s)? "
            r"(?:flesh|body|brains|organs)\b"
            r"|\beating human (?:flesh|bodies|organs)\b|\bcannibalism\b"
        )

    def positive(self, texts: Sequence[str], tags: Mapping[str, str], raw: str) -> list[Finding]:
        """Findings for a positive prompt: `texts` are its normalised forms with harmless phrases masked."""
        found: list[Finding] = []
        minor = "minors" in tags or any(MINOR_AGE.search(t) for t in texts)
        if minor and ({"sexual", "suggestive"} & tags.keys()):
            found.append(Finding("sexual/minors", "rules", "minors+sexual"))
        for name, pattern in self._hate:
            if any(pattern.search(t) for t in texts):
                found.append(Finding("hate", "rules", name))
                break
        targeted = _MENTION.search(raw) is not None or any(_TARGET.search(t) for t in texts)
        if targeted and any(_HARASS.search(t) for t in texts):
            found.append(Finding("harassment", "rules", "harassment-targeted"))
        if any(_ILLICIT.search(t) for t in texts):
            found.append(Finding("illicit", "rules", "illicit-instructions"))
        elif any(_CRIME.search(t) for t in texts):
            found.append(Finding("illicit", "rules", "illicit-crime-howto"))
        elif any(_FORGERY.search(t) for t in texts):
            found.append(Finding("illicit", "rules", "illicit-forgery"))
        elif any(_DRUG_SALE.search(t) for t in texts):
            found.append(Finding("illicit", "rules", "illicit-drug-sale"))
        if any(self._graphic.search(t) for t in texts):
            found.append(Finding("violence/graphic", "rules", "graphic-injury"))
        if any(_SELF_HARM.search(t) for t in texts):
            found.append(Finding("self-harm", "rules", "self-harm-instructions"))
        return found

    def negative(self, negative: str, text: str, tags: Mapping[str, str]) -> list[Finding]:
        """Inversion findings for a negative prompt, given the positive prompt's normalised text and tags."""
        clothing: set[str] = set()
        adult: set[str] = set()
        alive: set[str] = set()
        for words in _split_negative(negative):
            for vocabulary, bucket in ((_CLOTHING, clothing), (_ADULT_STRONG | _ADULT_WEAK, adult), (_ALIVE, alive)):
                terms = _item_terms(words, vocabulary)
                if terms:
                    bucket.update(terms)
        person = bool({"people", "minors"} & tags.keys()) or MINOR_AGE.search(text) is not None
        found: list[Finding] = []
        strips = (
            len(clothing) >= 2
            or bool(clothing & {"sfw", "safe for work"})
            or (person and bool(clothing & _STRONG_CLOTHING))
        )
        sexual_context = strips or bool({"sexual", "suggestive", "sexual/minors"} & tags.keys())
        sexual_context = sexual_context or (person and _SENSUAL_CONTEXT.search(text) is not None)
        if adult:
            names_adult = "adults" in tags
            strong = adult & _ADULT_STRONG
            if (sexual_context and (strong or not names_adult)) or (
                person and not names_adult and strong and len(adult) >= 2
            ):
                found.append(Finding("sexual/minors", "negative", "negative-adult"))
        if strips:
            found.append(Finding("sexual", "negative", "negative-clothing"))
        if person and len(alive) >= 2:
            found.append(Finding("violence/graphic", "negative", "negative-harm"))
        return found
