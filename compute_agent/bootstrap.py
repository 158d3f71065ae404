"""Assembling an agent: its model catalog, its on-chain registration, its API client."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from compute_agent.client import JobClient
from compute_agent.duties import DutyWatcher
from compute_agent.registration import DEVICE_CPU, DEVICE_GPU, AgentProfile, ensure_registered, join_committees
from compute_agent.service import AdapterCache, Agent
from compute_agent.slashes import SlashWatcher
from tributa.catalog import LocalModel, ModelCatalog
from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer
from tributa.config import Settings
from tributa.crypto import public_key_of
from tributa.errors import TributaError
from tributa.runtime import bwrap, cgroups
from tributa.runtime.engine import ServingEngine
from tributa.runtime.jobs import JobNotRunnable
from tributa.runtime.worker import WorkerConfig, WorkerError


def default_model_dirs(progress: Callable[[str], None] = print) -> list[Path]:
    """The demo generation model (SmolLM2-135M-Instruct + one LoRA adapter per dataset) and MiniLM."""
    from tributa.ml.embeddings import model_dir as minilm_dir
    from tributa.ml.smollm_adapters import ensure_smollm2_demo

    demo = ensure_smollm2_demo(progress=progress)
    return [Path(demo.base_dir), *map(Path, demo.adapters.values()), minilm_dir()]


def public_key(signer: Signer) -> bytes:
    """The agent's uncompressed secp256k1 public key (0x04 ‖ X ‖ Y), for encrypted inputs."""
    return public_key_of(bytes(signer.account.key))


def resolve_device(device: str) -> str:
    """Check a `--device` choice ("cpu", "cuda" or "cuda:N") against this machine.

    The agent registers the device class it will really run on, so an agent on a GPU machine
    that runs jobs on the CPU never advertises itself as a GPU agent."""
    if device == "cpu":
        return device
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise TributaError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise TributaError(f"--device {device}: this machine's torch sees no CUDA device; use --device cpu")
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise TributaError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0…)")
    return device


def device_class(device: str) -> int:
    return DEVICE_GPU if device.startswith("cuda") else DEVICE_CPU


def check_servable(parts) -> None:
    """Refuse at start-up what the runtime could only serve wrongly: an embedding folder whose
    pooling it cannot tell is an error here, not a MiniLM stand-in at the first job."""
    from tributa.ml.embeddings import EmbeddingFolderError, sentence_pipeline

    for base, _ in parts:
        if base.kind == "embed":
            try:
                sentence_pipeline(Path(base.path))
            except EmbeddingFolderError as exc:
                raise TributaError(f"cannot serve {base.path} as an embedding model: {exc}") from None


def build_agent(
    settings: Settings,
    contracts: Contracts,
    signer: Signer,
    store,
    model_dirs: list[Path],
    capacity: int = 1,
    stake_wei: int | None = None,
    progress: Callable[[str], None] = print,
    sandbox: bool = True,
    threads: int | None = None,
    device: str = "cpu",
    serving: ServingOptions | None = None,
    committee: bool = True,
) -> Agent:
    device = resolve_device(device)
    catalog = ModelCatalog(store)
    for path in model_dirs or default_model_dirs(progress):
        catalog.add(path)
    client = JobClient(settings.oracle_url, signer.account, contracts.chain_id, contracts.escrow.address)
    # Registered adapters missing from the model folders are fetched by CID into the data dir
    # when a job first names one (AdapterCache says why lazily), checked, then served.
    adapters = AdapterCache(catalog, store, adapter_cache_dir(settings))
    agent = Agent(contracts, signer, catalog, client, store, None, capacity=capacity, adapters=adapters)
    served = agent.servable_models()
    if not served:
        raise TributaError(
            "none of this agent's model folders matches a registered model; register them with `tributa model register`"
        )
    parts = [agent.model_parts(m) for m in served]
    check_servable(parts)
    missing = sorted({cid for m in served for cid in agent.missing_adapters(m)})
    if missing:
        progress(
            f"{len(missing)} registered adapter(s) not in the model folders, fetched by CID when a job first names one "
            f"(into {adapters.root}): {', '.join(missing)}"
        )
    # Load the models before registering: a model this agent cannot serve stops it here.
    agent.executor = make_executor(
        parts, sandbox, progress, threads, device, serving or ServingOptions(), readable=[adapters.root]
    )
    outcome = ensure_registered(
        contracts, signer, AgentProfile(served, device_class(device), capacity, public_key(signer)), stake_wei
    )
    agent.slash_watcher = SlashWatcher(contracts, signer.address, agent.metrics)
    if contracts.ai_oracle is not None and contracts.committee is not None:  # on a roster, whoever put it there
        agent.duty_watcher = DutyWatcher(contracts, signer.address)
    joined = join_committees(contracts, signer, served) if committee else []
    progress(
        f"agent {signer.address}: {outcome}, serving models {served}"
        + (f"; joined the AIOracle committees of models {joined}" if joined else "")
    )
    return agent


def adapter_cache_dir(settings: Settings) -> Path:
    """Where an agent keeps the adapters it fetched by CID (each in a folder named by its CID)."""
    return Path(settings.data_dir) / "adapters"


@dataclass(frozen=True)
class ServingOptions:
    """How the serving engine batches and what it allows a job (`tributa agent run --max-batch/
    --adapter-cache/--dtype/--worker-memory-mb/--job-timeout-s`)."""

    max_batch: int = 32
    adapter_cache: int = 8
    dtype: str | None = None  # None: float32 on CPU, bfloat16 (else float16) on a GPU
    memory_mb: int = 16384  # a sandboxed worker's address-space limit (torch maps far more than it uses)
    job_timeout_s: float = 600.0  # a batch still running after this is killed; its jobs then run alone


def make_executor(
    parts,
    sandbox: bool,
    progress: Callable[[str], None] = print,
    threads: int | None = None,
    device: str = "cpu",
    serving: ServingOptions = ServingOptions(),
    readable: Sequence[Path] = (),
) -> ServingEngine:
    """The serving engine: one spawned worker per base model, on `device`, batching the jobs in
    flight (up to the agent's capacity). Sandboxed (the default), each worker runs inside
    bubblewrap with a seccomp filter and a memory limit, reading only its model folders and the
    `readable` folders (the adapter cache: adapters fetched after start-up land there)."""
    if sandbox and bwrap.bwrap_path() is None:
        raise TributaError(
            "bubblewrap (bwrap) is not installed: `make setup` installs it (apt-get install bubblewrap), or run with --no-sandbox"
        )
    engine = ServingEngine(
        WorkerConfig(
            kind="generate",
            base_dir=None,
            device=device,
            dtype=serving.dtype,
            max_adapters=serving.adapter_cache,
            threads=threads,
            max_batch=serving.max_batch,
            isolation="bwrap" if sandbox else "none",
            memory_mb=serving.memory_mb if sandbox else None,
            batch_timeout_s=serving.job_timeout_s,
        )
    )
    try:
        if readable:
            bind_folders(engine, parts, readable)
        engine.preload(parts, progress)
    except (JobNotRunnable, WorkerError) as exc:
        engine.close()
        raise TributaError(f"cannot serve this agent's models: {exc}") from None
    if sandbox:
        progress(
            f"workers run in bubblewrap (no network, read-only model folders, seccomp, Landlock, {serving.memory_mb} MiB each)"
        )
        progress(cgroups.summary())  # a missing controller was warned about once, naming its stand-in
    return engine


def bind_folders(engine: ServingEngine, parts, folders: Sequence[Path]) -> None:
    """Create each base's worker now, able to read its adapters and `folders` as well.

    A sandboxed worker reads only the folders bound when it starts (read-only bind mounts, which
    show what is put in them later): the adapter cache is bound up front, so an adapter fetched
    after start-up can be loaded just in time without restarting the worker. preload then finds
    these workers made (ServingEngine.worker keys them by base folder)."""
    by_base: dict[Path, tuple[LocalModel, list]] = {}
    for base, adapters in parts:
        by_base.setdefault(Path(base.path).resolve(), (base, []))[1].extend(adapters)
    for base, adapters in by_base.values():
        extra = [LocalModel(path=Path(folder), cid="", digest=b"", kind="folder") for folder in folders]
        engine.worker(base, [*adapters, *extra])
