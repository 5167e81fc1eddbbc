# The packages bench/gpu_wheels.sh carries to a bare CUDA machine, and those it leaves out
# (sourced by bench/gpu_wheels.sh and bench/gpu_carry_check.sh; names as on PyPI).

# What the CUDA image lacks, by layer. The labelling path (EmotionClassifier, runner.label_shard)
# needs only the pydantic set; the full `emodraw-batch run` needs the rest.
CORE="pydantic pydantic-core annotated-types typing-inspection"
STATS="polars polars-runtime-32"
DASK="dask distributed prefect-dask tblib tornado zict locket"
PREFECT="prefect aiosqlite alembic amplitude-analytics asgi-lifespan asyncpg beartype burner-redis cachetools cffi
coolname cronsim cryptography exceptiongroup fastapi graphviz greenlet griffecli griffelib jinja2-humanize-extension jsonpointer jsonschema
jsonschema-specifications mako opentelemetry-api orjson pendulum py-key-value-aio pydantic-extra-types pydantic-settings
pydocket python-dotenv python-slugify pytz redis referencing rfc3339-validator rpds-py sniffio sqlalchemy starlette
text-unidecode toml tzdata uncalled-for uvicorn websockets"
# dask-cuda is not in the CPU venv: this version's rapids-dask-dependency pins dask 2026.7.1 (not
# carried: it only adds a .pth import hook, which a --target install on PYTHONPATH never runs).
GPU_ONLY="dask-cuda==${DASK_CUDA_VERSION:-26.10.0}"
# Never imported by `emodraw-batch run` (local or dask engine) nor bench/gpu.py (import trace).
PRUNED="apprise cyclopts docker docstring-parser griffe readchar rich-rst ruamel.yaml ruamel.yaml.clib
semver dateparser tzlocal python-json-logger jsonpatch oauthlib requests-oauthlib partd pycparser"

