# imagine on a CUDA GPU: the bot plus a supervised engine (`imagine run`).
#   docker build -t imagine .
#   docker run --gpus all -e IMAGINE_DISCORD_TOKEN=... -v imagine-data:/data -v imagine-models:/models imagine
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    IMAGINE_DATA_DIR=/data \
    HF_HOME=/models

WORKDIR /opt/imagine
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY moderation ./moderation
# torch comes with the base image (CUDA build); pip keeps it because it satisfies the requirement.
# The nudenet extra is AGPL-3.0 code (see README); its licence and source: https://github.com/notAI-tech/NudeNet
RUN pip install ".[nudenet]" \
    && useradd --create-home --uid 10001 imagine \
    && mkdir -p /data /models \
    && chown imagine:imagine /data /models

USER imagine
VOLUME ["/data", "/models"]
ENTRYPOINT ["imagine"]
CMD ["run"]
