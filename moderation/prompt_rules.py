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
- `graphic-injury`: a person torn apart, eaten alive, cut open, stabbed to death; body parts torn off; guts
  spilling; blood pouring; cannibalism.
- `hate-exclusion`: "no <group> allowed", "<group> go home".
- `self-harm-instructions`: "how to hurt myself", "best way to die", someone cutting or starving themselves,
  cut wrists, content encouraging eating disorders.
- `sexual-act`: a person with a word for a sex act, clothes taken off ("her top off"), private parts shown,
  "explicit photo".
- `hate-calling`: a group called vermin, savages... ("a poster calling <group> <insult>").
- `hate-caricature`: a cartoon, meme or caricature of a group with one of its racist tropes ("a big nose",
  "slanted eyes"); `hate-celebrating-atrocity`: mocking or celebrating the Holocaust, slavery, lynching.
- `minors+sexual` also reads a bare age under 18 given as its own item ("nude, 16").
- `sexualised-private-person` (harassment): a private person ("my classmate", "Sarah from my class") together
  with a sexual or suggestive word.
- `sexual-undressed`: a person without clothes in other words ("without a bra", "clothing: none",
  "wearing only a smile").
- `voyeurism` (harassment): a hidden camera in a shower, changing room or toilet.

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
    r"death to|get rid of all|purge|purging|eliminate all|ethnically cleanse|burn all|deport and kill|shoot|shooting|"
    r"shoot all|hunt|hunting|hang|hanging|hang all|burn|burning|bomb|bombing|massacre|massacring|butcher|"
    r"butchering|beat up|beating up|stone|stoning)"
)
_HATE_PREDICATE = (
    r"(?:vermin|rats|cockroaches|roaches|parasites|animals|apes|monkeys|subhuman|sub human|subhumans|inferior|"
    r"an inferior race|filth|filthy|a disease|disease|a plague|plague|savages|terrorists|criminals|rapists|thieves|"
    r"evil|mentally ill|dirty|scum|trash|garbage|not human|pigs|dogs|insects|a cancer|cancer|demons|abominations|"
    r"an abomination|invaders|degenerates|lesser beings|worthless|stupid|groomers|pedophiles|freaks|perverts|"
    r"sick perverts|sick|less intelligent|inferior beings|locusts|barbarians|primitive|unclean|less than human|"
    r"devils|breeding animals|a virus|germs|leeches|an infestation|a curse|beasts|not people|rodents|maggots)"
)
_ANIMALS = (
    r"(?:(?:a |an )?(?:ape|monkey|rat|pig|cockroach|roach|insect|dog|animal|subhuman|parasite|gorilla|baboon|chimp|"
    r"rodent|maggot|beast|leech|terrorist|criminal|rapist|thief|demon)|apes|monkeys|rats|pigs|vermin|cockroaches|"
    r"roaches|insects|dogs|animals|subhumans|parasites|gorillas|baboons|chimps|chimpanzees|locusts|snakes|rodents|"
    r"maggots|beasts|leeches|lice|terrorists|criminals|rapists|thieves|demons)"
)
_CARICATURE = re.compile(r"\b(?:cartoon|cartoons|caricature|caricatures|meme|memes|propaganda|mocking|mock)\b")
_TROPE = re.compile(
    r"\b(?:big nose|big noses|hooked nose|hook nose|hooknosed|counting money|greedy|slanted eyes|slant eyes|"
    r"squinty eyes|buck teeth|eating dogs|eating cats|eats dogs|watermelon|fried chicken|suicide vest|"
    r"big lips|on welfare|stealing|with a bomb)\b"
)
_ATROCITY = re.compile(
    r"\b(?:mocking|mock|making fun of|laughing at|celebrating|celebrate|celebratory|glorifying|glorify|cheering|"
    r"praising|joking about|jokes about|funny)(?: \w+){0,4}? (?:the )?(?:holocaust|shoah|genocide|slavery|"
    r"gas chambers?|lynching|lynchings|auschwitz|ethnic cleansing|9 11 attacks|twin towers attack)\b"
)
_JUSTIFIED = re.compile(
    r"\b(?:genocide|holocaust|slavery|apartheid|ethnic cleansing|massacre|lynchings?)(?: \w+){0,2}? "
    r"(?:was|is|were) (?:justified|good|right|deserved|a good thing|necessary|needed|a hoax)\b"
)
_BARE_AGE = re.compile(r"(?:^|[,;(|])\s*(?:1[0-7]|[1-9])\s*(?=[,;)|]|$)")
_UNDRESSED = re.compile(
    r"\b(?:without|no|zero|0) (?:a |any |her |his )?(?:bra|panties|underwear|knickers|clothes|clothing|top|shirt and "
    r"bra|shirt or bra)\b"
    r"|\b(?:clothes|clothing|outfit|attire|garments)(?: \w+)? (?:none|nothing|0|zero|null)\b"
    r"|\bwearing (?:only|just|nothing but) (?:a |her |his )?(?:smile|grin|jewelry|jewellery|necklace|stockings|"
    r"body paint|socks|heels|high heels)\b"
)
_DEEPFAKE = re.compile(
    r"\b(?:deepfake|deepfakes|deep fake|face swap|faceswap|use this selfie|use this photo|use her photo|"
    r"use his photo|from this photo|from her instagram|from his instagram|put (?:her|his|my \w+ s) face)\b"
)
_VOYEUR = re.compile(
    r"\bhidden (?:camera|cam|spy camera|spycam)(?: \w+){0,4}? (?:shower|showers|changing room|changing rooms|"
    r"locker room|locker rooms|bathroom|toilet|toilets|restroom|dressing room|bedroom)\b"
)
_SHOULD_DIE = (
    r"(?:should|must|deserve to|need to|ought to|have to|will) (?:all )?(?:be )?"
    r"(?:die|killed|exterminated|gassed|burned|shot|hanged|lynched|wiped out|eradicated|deported and killed|"
    r"euthanized|euthanised|sterilized|sterilised|put in camps|sent to camps|sent to the gas chambers|"
    r"burn in hell|burned alive|shot dead|beaten|enslaved|slaughtered|massacred)"
)

# Where people are sent back or deported to is a policy debate when it is about migrants ("a protest against
# deporting refugees"); about a race or a religion it is a call to expel them.
_NOT_MIGRANTS = r"(?!(?:immigrants?|migrants?|refugees?|foreigners?)\b)"

_TARGET = re.compile(
    r"\b(?:my|our) (?:\w+ )?(?:classmate|classmates|class mate|coworker|coworkers|co worker|colleague|colleagues|boss|"
    r"teacher|professor|neighbour|neighbor|neighbours|neighbors|ex|ex girlfriend|ex boyfriend|ex wife|ex husband|"
    r"girlfriend|boyfriend|roommate|flatmate|sister|brother|cousin|stepmom|stepdad|stepmother|stepfather|"
    r"manager|tutor|landlord|crush|step sister|step brother|stepsister|stepbrother|teammate|teammates|lab partner|"
    r"sister in law|brother in law|mother in law|father in law|bully)\b"
    r"|\b(?:this|that|a specific|one) (?:girl|guy|boy|kid|person|woman|man|student|teacher) (?:from|at|in) (?:my|our)\b"
    r"|\bsomeone (?:from|at|in) (?:my|our)\b|\bkid in (?:my|our) class\b"
    r"|\b(?:the|a) (?:girl|guy|boy|kid|woman|man) (?:in|at|from) my (?:office|class|school|work|team|street)\b"
    r"|\bfrom (?:\d+(?:st|nd|rd|th) period|first period|homeroom|(?:my|our) (?:class|school|office|gym|dorm))\b"
)
_DOXXING = re.compile(
    r"\b(?:lives at|living at|home address|house address|his address|her address|their address) \d*"
    r"|\b(?:home address|address) and (?:phone|cell|mobile) number\b|\b(?:his|her|their) (?:phone|cell) number\b"
)
_MENTION = re.compile(r"<@!?\d+>|(?<![\w.])@[A-Za-z0-9_.]{2,32}")  # a Discord mention, or an @handle
_HARASS = re.compile(
    r"\b(?:humiliat\w*|mock|mocks|mocked|mocking|ridicul\w*|bully|bullying|bullied|harass\w*|embarrass\w*|"
    r"shame|shaming|shamed|insult\w*|threat|threats|threaten\w*|make fun of|making fun of|worthless|loser|losers|"
    r"disgusting|stupid|idiot|moron|fat pig|ugly pig|fat and ugly|ugly and fat|pathetic|freak|go die|should die|"
    r"must die|deserves to die|kill him|kill her|kill them|beat up|beaten up|beating up|punched|stabbed|spit on|"
    r"whore|slut|bitch|hated by everyone|everyone hates|nobody likes|home address|cheating pig|rat face|pig face|"
    r"scare|scares|scaring|intimidate|intimidating|frighten|frightening|terrify|terrifying|stalk|stalking|"
    r"get (?:him|her|them) fired|liar|thief|fat cow|ugly cow|die tomorrow|target on|"
    r"will regret|ll regret|gonna regret|going to regret|will pay|"
    r"watch your back|watch (?:his|her|their) back|you re dead|you are dead|you re next|you are next|"
    r"i know where you live|i know where (?:he|she|they) lives?|pointing a gun at|gun to (?:his|her|their) head|"
    r"(?:i will|i ll|i m going to|im going to|gonna|going to) (?:hurt|kill|get|find|end|ruin) (?:you|him|her|them)|"
    r"hurt you|hurt (?:him|her|them)|go get (?:him|her|them)|peeing (?:himself|herself|themselves)|"
    r"wetting (?:himself|herself|themselves)|pooping (?:himself|herself)|diseased|everyone laughs|"
    r"everyone laughing|laughing at (?:him|her|them)|ugly (?:meme|edit|picture|photo|drawing|version|caricature)|"
    r"(?:look|looks|looking) (?:ugly|fat|stupid|disgusting|diseased|retarded|pathetic)|tombstone|gravestone|"
    r"obituary|in a coffin|in a diaper|wearing a diaper|in diapers|crying like a baby|"
    r"send it to (?:all|everyone|the whole|every)|post it (?:in|to|on) the (?:group|server|chat)|"
    r"sucking d ck|sucking dick|sucking cock|on the toilet|real name|full name|snapchat handle|instagram handle|"
    r"his address|her address)\b"
)

_SEX_ACT = re.compile(
    r"\b(?:fucking|fucked|fucks|screwing|shagging|humping|banging|railing|railed|getting railed|sucking off|"
    r"jerking off|fingering)\b"
)
_SEX_STRIP = re.compile(
    r"\bher (?:top|shirt|bra|bikini|bikini top|blouse|dress|clothes|panties|underwear|knickers|pants|skirt|"
    r"nightgown|swimsuit|robe|towel) (?:off|removed|down|open|pulled down|lifted|pulled up)\b"
    r"|\bhis (?:pants|trousers|underwear|boxers|briefs|clothes|shorts) (?:off|removed|down|pulled down)\b"
    r"|\b(?:showing|flashing|exposing|baring|revealing|shows|flashes|exposes|bares) (?:off )?(?:her|his|their) "
    r"(?:breasts|boobs|tits|butt|ass|bottom|genitals|crotch|nipples|private parts|naked body|vagina|penis)\b"
    r"|\b(?:stripping|strips|stripped|undresses) (?:off|naked|nude|for|down to|in front|on camera|on stage)\b"
    r"|\b(?:pull|pulling|pulls|pulled|take|taking|takes|took|slip|slipping|slips|slide|sliding|slides|rip|ripping|"
    r"rips|tear|tearing|tears|peel|peeling|peels) (?:down|off) (?:her|his|their) "
    r"(?:panties|underwear|knickers|thong|bra|bikini|bikini bottoms?|bikini top|top|shirt|lingerie|nightie|"
    r"pants|trousers|boxers|briefs|clothes|dress|skirt|swimsuit|leggings|shorts)\b"
    r"|\bexplicit (?:photo|photos|image|images|picture|pictures|pic|pics|scene|scenes|video|content|art|drawing|"
    r"render|shot|shots|photography|hentai|sex)\b"
)

_ILLICIT_CUE = (
    r"(?:how to (?:make|build|cook|synthesi[sz]e|produce|create|manufacture|assemble|brew|get|buy|obtain|use)|"
    r"how do i (?:make|build|cook|get|buy)|recipe for|recipe of|instructions for|instructions to|instructions on|"
    r"step by step|tutorial|guide to|guide for|guide on|diagram of|diagram showing|blueprint for|blueprint of|"
    r"blueprints|schematic|schematics|ingredients for|ingredients of|making (?:a|an|your own)|"
    r"how to (?:turn|convert|modify)|converting (?:a|an|the)|turning (?:a|an|the)|"
    r"building (?:a|an|your own)|homemade|home made|diy)"
)
_ILLICIT_ITEM = (
    r"(?:bomb|bombs|explosive|explosives|ied|ieds|grenade|grenades|detonator|napalm|thermite|nerve gas|nerve agent|"
    r"sarin|ricin|anthrax|poison gas|chlorine gas|mustard gas|meth|methamphetamine|crystal meth|heroin|cocaine|"
    r"crack cocaine|fentanyl|lsd|mdma|silencer|suppressor|ghost gun|untraceable gun|machine gun conversion|"
    r"auto sear|full auto conversion|molotov|counterfeit \w+|fake money|fake id|fake passport|ransomware|malware|"
    r"computer virus|keylogger|zip gun|pipe gun|chloroform|date rape drug|roofies|ghb|ecstasy|ketamine|"
    r"phishing \w+|poison (?:someone|a person|my \w+|him|her|people)|stolen credit cards?|"
    r"skimmer|hotwire a car|hotwiring a car|break into a house|shoplift|shoplifting|launder money|untraceable poison|"
    r"3d printed (?:\w+ )?(?:gun|guns|glock|pistol|rifle|firearm|ar 15)|printable (?:gun|glock|pistol|firearm)|"
    r"glock switch|solvent trap|sql injection|pill press|fake oxy|counterfeit pills|fake pills|"
    r"(?:credit card|password|user) database)"
)
_ILLICIT = re.compile(
    rf"\b{_ILLICIT_CUE}(?: \w+){{0,5}}? {_ILLICIT_ITEM}\b"
    rf"|\b{_ILLICIT_ITEM}(?: \w+){{0,6}}? (?:recipe|tutorial|instructions|blueprint|schematic|guide|diagram|"
    r"step by step|chart)\b"
)
_CRIME = re.compile(
    r"\bhow (?:to|do i|can i) (?:poison|kill|murder|kidnap|stalk|rob|mug|hack into|steal from|scam|blackmail|"
    r"smuggle|strangle|drug) (?:someone|somebody|a person|people|my \w+|him|her|them|a bank|a store|a child|kids)\b"
    r"|\b(?:poison|poisoning|kill|killing|murder|murdering|steal|stealing|rob|robbing|smuggle|smuggling|stab|stabbing)"
    r" \w+(?: \w+)? without (?:getting caught|leaving evidence|leaving a trace|a trace|being caught)\b"
    r"|\bhow (?:to|do i|can i) (?:hack|hack into|crack|break into|get into) "
    r"(?:someone s |somebody s |his |her |their |a |an |my \w+ s |\w+ s )(?:\w+ )?"
    r"(?:wifi|wi fi|email|account|accounts|phone|instagram|facebook|password|passwords|computer|"
    r"bank account|router|network)\b"
    r"|\b(?:steal|stealing) (?:\w+ )?(?:passwords|credit card numbers|identities|identity|data|logins|bank details)\b"
    r"|\bhacking into (?:someone s|someones|somebody s|somebodys|his|her|their|my \w+ s|\w+ s) (?:\w+ )?"
    r"(?:account|accounts|instagram|facebook|email|phone|wifi|snapchat|discord|tiktok)\b"
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
    r"dollars|euros|(?:euro|dollar|pound|yen) notes|passport|passports|id|ids|id card|id cards|drivers license|"
    r"driver s license|driving licence|bank statements?|test results?|certificates?|checks|cheques|"
    r"license|licence|identity documents|documents|prescription|prescriptions|doctor s note|vaccination card|"
    r"vaccine card|diploma|degree certificate|social security card)\b"
)
_SELF = r"(?:myself|yourself|oneself|ourselves|himself|herself|themselves|themself|yourselves)"
_SELF_HARM = re.compile(
    rf"\bhow (?:to|do i|can i|do you|should i) (?:(?:kill|hurt|cut|starve|hang|poison|drown|harm|shoot|burn|"
    rf"suffocate) {_SELF}|overdose|od|commit suicide)\b"
    r"|\b(?:best|easiest|painless|quickest|fastest|surest|quietest|simplest) (?:way|ways|method|methods|place|places|"
    r"spot|spots) to (?:die|commit suicide|end it all|end my life|end your life|kill myself|kill yourself|cut|"
    r"overdose|hang)\b"
    r"|\b(?:ways|methods|list of ways) to (?:die|kill yourself|kill myself|commit suicide|end it)\b"
    r"|\bhow many (?:pills|tablets|sleeping pills|painkillers)(?: \w+){0,4}? (?:die|kill|overdose|od)\b"
    rf"|\b(?:cutting|cut|cuts|slashing|slashed|slitting|slit|burning|burned|burnt|hurting|harming|starving|starved|"
    rf"hanging|hanged|shooting|stabbing|stabbed|drowning|poisoning|mutilating|carving|choking|strangling|suffocating|"
    rf"scratching|punching|hitting|bleeding) {_SELF}(?: \w+)?(?: to death| on purpose| until)?\b"
    r"|\b(?:cut|cuts|cutting|slit|slits|slitting|slash|slashes|slashed|slashing) (?:\w+ )?(?:wrists|veins)\b"
    r"|\b(?:wrists|veins) (?:cut|slit|slashed|cut open|sliced)\b"
    r"|\b(?:make|makes|making|made) (?:herself|himself|myself|themselves|yourself) (?:throw up|vomit|puke|purge)\b"
    r"|\b(?:cutting|cut|self harm|self harming|harming (?:myself|yourself)|hurting (?:myself|yourself)|starving|"
    r"purging)(?: \w+){0,2}? without (?:anyone|anybody|people|your parents|my parents|parents|them) "
    r"(?:noticing|knowing|finding out|seeing)\b"
    r"|\bhid(?:e|ing) (?:the |my |your |her |his )?(?:cuts|scars|self harm scars|self harm)\b"
    r"|\b(?:person|man|woman|girl|boy|guy|teen|someone|student) (?:jumping|jumps|about to jump) (?:off|from) "
    r"(?:a |the )?(?:bridge|building|roof|rooftop|skyscraper|balcony|overpass)\b"
    r"|\b(?:person|man|woman|girl|boy|guy|teen|someone|body) hanging (?:from|by) (?:a |the )?(?:ceiling fan|ceiling|"
    r"rope|noose|beam|rafter|rafters|tree branch|doorframe|door frame)\b"
    r"|\b(?:on the edge of|standing on|on top of) (?:a |the )?(?:bridge|roof|rooftop|building|ledge|cliff|"
    r"skyscraper)(?: \w+){0,2}? about to jump\b"
    r"|\b(?:burning|burn|burned|burnt|cutting|cut) (?:my|her|his|their|your) (?:own )?(?:arm|arms|skin|wrist|wrists|"
    r"hand|hands|leg|legs|thigh|thighs|forearm|forearms) with (?:a )?(?:cigarette|lighter|iron|razor|blade|knife)\b"
    r"|\b(?:razor|razor blade|blade) (?:and|with|on) (?:bloody|bleeding|cut) (?:thighs|wrists|arms|forearms|legs)\b"
    r"|\b(?:carving|carve|carved|cutting|cut|scratching) (?:\w+ ){0,3}into (?:her|his|their|my|your) "
    r"(?:skin|arm|arms|flesh|thigh|thighs|wrist|wrists|legs|stomach)\b"
    r"|\b(?:encouraging|encourage|encourages|glorifying|glorify|glorified|glorifies|promoting|promote|promotes|"
    r"romanticizing|romanticising|romanticized|romanticised|celebrating) (?:\w+ ){0,2}?(?:anorexia|bulimia|"
    r"starvation|starving|eating disorders?|cutting|self harm|self injury|suicide|purging)\b"
    r"|\b(?:about to|going to|ready to|wants to|want to|trying to|tries to) (?:jump|kill|hang|shoot|overdose|end it)"
    rf"(?: {_SELF}| off| from)?(?: \w+){{0,3}}? "
    r"(?:to die|to end it|to end (?:her|his|my|their) life|to (?:her|his) death)\b"
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
# Who wears the clothes, and "on", may stand with them: "fully clothed woman", "clothes on", "covered body".
_CLOTHING_JOINERS = _JOINERS | _phrases(
    "woman, women, man, men, girl, girls, person, people, body, bodies, on, her, his"
)
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


def _item_terms(
    words: Sequence[str], vocabulary: frozenset[str], joiners: frozenset[str] = _JOINERS
) -> set[str] | None:
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
            if words[i] not in joiners:
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
                    rf"basically|no better than|only) )*(?:a |an )?(?!not |never |no )(?:\w+ )?{_HATE_PREDICATE}\b"
                ),
            ),
            (
                "hate-as-animals",
                re.compile(rf"\b{group} (?:depicted |drawn |shown |portrayed )?as (?:\w+ ){{0,2}}?{_ANIMALS}\b"),
            ),
            (
                "hate-calling",
                re.compile(
                    rf"\b(?:calling|calls|called|call|labelling|labeling|naming) {group}(?: \w+){{0,2}}? "
                    rf"{_HATE_PREDICATE}\b"
                ),
            ),
            (
                "hate-should-die",
                re.compile(
                    rf"\b{group}(?: \w+)? {_SHOULD_DIE}\b"
                    rf"|\b{group}(?: \w+)? (?:burning|rotting|roasting|suffering) in hell\b"
                ),
            ),
            (
                "hate-exclusion",
                re.compile(
                    rf"\bno {group} allowed\b|\b{group} (?:not welcome|go home|get out)\b"
                    rf"|\b{group} out(?: now| forever| of (?:our|my|this|the) \w+)?$"
                    rf"|\b{_NOT_MIGRANTS}{group}(?: \w+){{0,2}}? (?:be |being |get |getting )?(?:sent|shipped|deported|"
                    r"kicked|thrown) (?:back|out)\b"
                    r"|\b(?:send|sending|ship|shipping|deport|deporting|kick out|kicking out|throw out|expel|"
                    r"expelling) "
                    rf"(?:all |the |every |those |these )?{_NOT_MIGRANTS}{group}\b"
                ),
            ),
        )
        self._group = re.compile(rf"\b{group}\b")
        person = _alternation(normalize(p) for p in people)
        self._graphic = re.compile(
            rf"\b{person}(?: \w+){{0,3}}? (?:torn apart|ripped apart|blown apart|blown to pieces|eaten alive|cut open|"
            rf"being eaten|skinned|torn to pieces|ripped to shreds)\b"
            r"|\beating (?:a |the )?(?:person|people|human|humans|man|woman|child|body)(?: s)? "
            r"(?:flesh|body|brains|organs)\b"
            r"|\beating human (?:flesh|bodies|organs)\b|\bcannibalism\b"
            rf"|\b{person}(?: \w+){{0,3}}? (?:being )?(?:stabbed|hacked|beaten|burned|burnt|strangled|tortured|"
            r"bludgeoned|shot|crushed|mauled|whipped|kicked|starved) to death\b"
            r"|\b(?:(?:his|her|their|its|a|the) )?(?:head|face|arm|arms|leg|legs|limbs|fingers|hand|hands|feet|foot|"
            r"jaw|ears|nose|tongue|eyes|skin|scalp|genitals) (?:being )?(?:blown|ripped|torn|hacked|chopped|sawn|sawed|"
            r"sliced|peeled|burned|burnt|cut|bitten|gouged) (?:off|out|away|apart)\b"
            r"|\b(?:guts|entrails|innards|brains|organs|viscera|bowels)(?: \w+)? (?:spilling|spilled|spilt|hanging out|"
            r"pulled out|ripped out|torn out|splattered|blown out|everywhere|spattered|oozing|falling out)\b"
            r"|\b(?:spilling|pulling|ripping|tearing|blowing|gouging|cutting) (?:out )?(?:his|her|their|its|the|a "
            r"person s|a man s|a woman s) (?:guts|entrails|intestines|brains|innards|eyes|eye|tongue|heart)\b"
            r"|\b(?:blood|gore) (?:pouring|spraying|gushing|spurting|pooling|splattering|squirting)\b"
            rf"|\b{person}(?: \w+){{0,3}}? (?:being )?(?:chopped up|chopped to pieces|chopped into pieces|hacked to "
            r"pieces|hacked apart|cut to pieces|cut into pieces|sawn in half|sawed in half|sawn apart|butchered|"
            r"skinned|flayed|disembowelled|disemboweled)\b"
            r"|\b(?:her|his|their|its|a|the|s) (?:throat|throats) (?:cut|slit|slashed|cut open|sliced|sliced open)\b"
            r"|\b(?:cutting|cuts|slitting|slits|slit|slashing|slashes|slashed|slicing|slices) (?:open )?"
            r"(?:her|his|their|its|a person s|a man s|a woman s|the victim s|someone s|\w+ s) throat\b"
            r"|\b(?:his|her|their|its|a|the|s) (?:head|skull|face|brain|brains) "
            r"(?:exploding|explodes|exploded|bursting|burst open|caved in|smashed in|split open|blown open|"
            r"blown apart|blown off)\b"
            r"|\b(?:slit|sliced|cut|ripped|torn|split|carved|hacked) open (?:stomach|belly|abdomen|chest|torso|body|"
            r"bodies|corpse|corpses|skull|ribcage)\b"
            r"|\b(?:stomach|belly|abdomen|chest|torso|skull|ribcage) "
            r"(?:slit|sliced|cut|ripped|torn|split|hacked) open\b"
            r"|\b(?:organs|intestines|guts|entrails|innards|brains|brain matter) (?:visible|exposed|showing|on display|"
            r"on the ground|on the floor|hanging|everywhere)\b"
            r"|\bexposed (?:organs|intestines|guts|entrails|brain|brains|bones|skull|muscle|muscles)\b"
            r"|\b(?:skinned and gutted|gutted and skinned)\b"
            r"|\b(?:stabbing|stabbed|slashing|slashed|shooting|shot|hacking|hacked) (?:someone|somebody|a person|"
            r"him|her|them|a man|a woman|a child|people)(?: \w+){0,3}? (?:over and over|repeatedly|in the face|"
            r"in the eye|in the eyes|in the throat|in the neck|in the head)\b"
            rf"|\b(?:skinning|flaying|boiling|roasting|burning|eating) (?:a |the )?{person}(?: \w+)? alive\b"
            r"|\b(?:guts|intestines|entrails|belly|stomach) (?:ripped|torn|slit|sliced|cut|hacked) open\b"
        )

    def positive(self, texts: Sequence[str], tags: Mapping[str, str], raw: str) -> list[Finding]:
        """Findings for a positive prompt: `texts` are its normalised forms with harmless phrases masked."""
        found: list[Finding] = []
        sexual = bool({"sexual", "suggestive"} & tags.keys())
        minor = "minors" in tags or any(MINOR_AGE.search(t) for t in texts) or _BARE_AGE.search(raw) is not None
        if minor and sexual:
            found.append(Finding("sexual/minors", "rules", "minors+sexual"))
        for name, pattern in self._hate:
            if any(pattern.search(t) for t in texts):
                found.append(Finding("hate", "rules", name))
                break
        else:
            if any(_CARICATURE.search(t) and _TROPE.search(t) and self._group.search(t) for t in texts):
                found.append(Finding("hate", "rules", "hate-caricature"))
            elif any(_ATROCITY.search(t) or _JUSTIFIED.search(t) for t in texts):
                found.append(Finding("hate", "rules", "hate-celebrating-atrocity"))
        targeted = _MENTION.search(raw) is not None or any(_TARGET.search(t) for t in texts)
        if (targeted and any(_HARASS.search(t) for t in texts)) or any(_DOXXING.search(t) for t in texts):
            found.append(Finding("harassment", "rules", "harassment-targeted"))
        elif (targeted or any(_DEEPFAKE.search(t) for t in texts)) and sexual:
            found.append(Finding("harassment", "rules", "sexualised-private-person"))
        if any(_VOYEUR.search(t) for t in texts):
            found.append(Finding("harassment", "rules", "voyeurism"))
        people = "people" in tags or "adults" in tags or "minors" in tags
        if (people and any(_SEX_ACT.search(t) for t in texts)) or any(_SEX_STRIP.search(t) for t in texts):
            found.append(Finding("sexual", "rules", "sexual-act"))
        elif people and any(_UNDRESSED.search(t) for t in texts):
            found.append(Finding("sexual", "rules", "sexual-undressed"))
            if minor:
                found.append(Finding("sexual/minors", "rules", "minors+sexual"))
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
            for vocabulary, bucket, joiners in (
                (_CLOTHING, clothing, _CLOTHING_JOINERS),
                (_ADULT_STRONG | _ADULT_WEAK, adult, _JOINERS),
                (_ALIVE, alive, _JOINERS),
            ):
                terms = _item_terms(words, vocabulary, joiners)
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
