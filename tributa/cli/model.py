"""`tributa model …`: register models with their provenance, list them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from tributa.cli import account_option, pass_ctx, upload_option
from tributa.cli.format import emit_json, eth, json_option, parse_eth, progress_bar, quiet_option, wei
from tributa.errors import TributaError
from tributa.publish import register_model, set_serving_terms
from tributa.registry import MAX_NEW_TOKENS_CAP, ModelInfo, list_models, read_model
from tributa.store import cid as cidlib


def _parse_weights(pairs: tuple[str, ...]) -> dict[int, int]:
    weights: dict[int, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isdigit() or not value.isdigit():
            raise TributaError(f"--dataset takes ID=BPS (e.g. 1=5000), not {pair!r}")
        weights[int(key)] = int(value)
    return weights


@click.group()
def model() -> None:
    """Models: base weights, LoRA adapters, training datasets, fee per task."""


@model.command("register")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True)
@click.option(
    "--adapter", "adapters", multiple=True, type=click.Path(path_type=Path), help="LoRA adapter folder (repeatable)"
)
@click.option("--dataset", "datasets", multiple=True, help="training dataset ID=BPS, summing to 10000 (repeatable)")
@click.option("--fee", default="0", show_default=True, help="ETH per task to the model's fee receiver")
@click.option("--fee-receiver", default=None, help="default: the publisher")
@click.option(
    "--max-new-tokens",
    type=click.IntRange(1, MAX_NEW_TOKENS_CAP),
    default=None,
    help="most new tokens a generation task may ask for; the fee pays for up to this many (default 64)",
)
@upload_option
@quiet_option
@account_option("publisher")
@pass_ctx
def register(
    ctx, path, name, adapters, datasets, fee, fee_receiver, max_new_tokens, upload, quiet, account_spec
) -> None:
    """Add PATH (and adapters) to the content store and register the model."""
    fee_wei = parse_eth(fee)
    if fee_receiver is not None:
        from tributa.chain.accounts import checksum

        fee_receiver = checksum(fee_receiver)
    signer = ctx.signer(account_spec, "publisher")
    published = register_model(
        ctx.contracts,
        signer,
        ctx.store,
        name,
        path,
        list(adapters),
        _parse_weights(datasets),
        fee_wei,
        fee_receiver,
        progress=progress_bar(f"adding {path}", quiet),
    )
    click.echo(f"model {published.model_id} registered: {name} ({published.base.kind}), weights {published.base.cid}")
    for adapter in published.adapters:
        click.echo(f"  adapter {adapter.path.name}: {adapter.cid}")
    # Agents fetch adapters by CID through the oracle; the base weights each agent holds itself.
    for adapter in published.adapters if upload else ():
        ctx.upload(signer, adapter.cid, f"model:{published.model_id}")
    if max_new_tokens is not None:
        terms = set_serving_terms(ctx.contracts, signer, published.model_id, max_new_tokens=max_new_tokens)
        click.echo(f"  a task buys up to {terms.max_new_tokens} new tokens")


@model.command("terms")
@click.argument("model_id", type=int)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(1, MAX_NEW_TOKENS_CAP),
    default=None,
    help="most new tokens a generation task may ask for (the fee pays for up to this many)",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(0.9, 1.0),
    default=None,
    help="embeddings: results agree when every vector pair's cosine is at least this",
)
@click.option(
    "--logit-margin",
    type=click.FloatRange(0.0, 50.0),
    default=None,
    help="generation: a claimed token is accepted within this many logits of the verifier's best",
)
@account_option("publisher")
@pass_ctx
def terms(ctx, model_id, max_new_tokens, min_cosine, logit_margin, account_spec) -> None:
    """Show a model's serving terms, or set them (publisher only)."""
    from tributa.registry import read_model, read_serving_terms

    read_model(ctx.contracts.registry, model_id)  # an unknown model is an error, not default terms
    if (max_new_tokens, min_cosine, logit_margin) != (None, None, None):
        shown = set_serving_terms(
            ctx.contracts, ctx.signer(account_spec, "publisher"), model_id, max_new_tokens, min_cosine, logit_margin
        )
    else:
        shown = read_serving_terms(ctx.contracts.registry, model_id)
    click.echo(
        f"model {model_id}: up to {shown.max_new_tokens} new tokens per task; "
        f"embeddings agree at cosine >= {_or_default(shown.min_cosine)}; "
        f"generations within {_or_default(shown.logit_margin)} logits of the verifier's best"
    )


def _or_default(value: float | None) -> str:
    return "the verifier's default" if value is None else f"{value:g}"


@model.command("convert")
@click.argument("gguf", required=False, type=click.Path(path_type=Path))
@click.option("--smollm2", is_flag=True, help="convert the SmolLM2-135M-Instruct GGUF that `make setup` installs")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="where converted folders are cached (default: $TRIBUTA_CACHE_DIR, else .cache/tributa)",
)
@quiet_option
def convert(gguf, smollm2, cache_dir, quiet) -> None:
    """Convert a GGUF model file once into a cached Hugging Face folder, and print that folder
    (register it with `tributa model register FOLDER`). Progress (digesting the file, then
    de-quantising its tensors) goes to stderr; --quiet leaves only errors there."""
    import contextlib
    import os

    from tributa.ml.gguf_models import convert_gguf, smollm2_gguf
    from tributa.ml.models import ModelFolderError

    if bool(gguf) == smollm2:
        raise TributaError("give either a GGUF file or --smollm2")
    path = smollm2_gguf() if smollm2 else gguf
    try:
        # transformers draws its own tqdm bar while de-quantising (on sys.stderr): --quiet hides it too.
        with (
            open(os.devnull, "w") if quiet else contextlib.nullcontext() as devnull,
            contextlib.redirect_stderr(devnull) if quiet else contextlib.nullcontext(),
        ):
            folder = convert_gguf(
                path,
                cache_dir,
                progress=lambda m: None if quiet else click.echo(m, err=True),
                hash_progress=progress_bar(f"digesting {Path(path).name}", quiet),
            )
    except ModelFolderError as exc:
        raise TributaError(str(exc)) from None
    click.echo(str(folder))


@model.command("list")
@json_option
@pass_ctx
def list_cmd(ctx, as_json) -> None:
    """Every registered model."""
    models = list_models(ctx.contracts.registry)
    if as_json:
        emit_json({"models": [_model_doc(m) for m in models]})
        return
    if not models:
        click.echo("no models registered")
    for m in models:
        for line in _model_lines(m):
            click.echo(line)


@model.command("show")
@click.argument("model_id", type=int)
@json_option
@pass_ctx
def show(ctx, model_id, as_json) -> None:
    """One model: as `model list` shows it, with its kind, publisher and serving terms.

    The kind (generation or embedding) is read from the base folder's config.json: from this
    machine's store, else from the oracle's content API; "unknown (why)" when neither has it."""
    from tributa.model_kind import registered_kind

    m = read_model(ctx.contracts.registry, model_id)
    kind = registered_kind(ctx.contracts, ctx.store, ctx.settings.oracle_url, m.weights_digest)
    if as_json:
        emit_json({**_model_doc(m), "kind": kind.kind, "kind_source": kind.source, "kind_unknown_because": kind.reason})
        return
    for line in _model_lines(m):
        click.echo(line)
    click.echo(f"     kind: {kind}" + (f" (config.json from the {kind.source})" if kind.known else ""))
    click.echo(f"     published by {m.publisher}, fees to {m.fee_receiver}")
    click.echo(
        f"     a task buys up to {m.serving.max_new_tokens} new tokens; embeddings agree at cosine >= "
        f"{_or_default(m.serving.min_cosine)}; generations within {_or_default(m.serving.logit_margin)} logits"
    )


def _model_lines(m: ModelInfo) -> list[str]:
    status = "active" if m.active else "inactive"
    lines = [
        f"{m.model_id:>3}  {m.name:<28} {status:<8} fee {eth(m.fee_per_task):<14} weights {cidlib.digest_to_cid(m.weights_digest)}"
    ]
    if m.adapter_digests:
        lines.append(f"     adapters: {', '.join(str(cidlib.digest_to_cid(d)) for d in m.adapter_digests)}")
    if m.dataset_ids:
        pairs = ", ".join(f"{d}:{w / 100:.0f}%" for d, w in zip(m.dataset_ids, m.dataset_weights_bps, strict=False))
        lines.append(f"     trained on datasets {pairs}")
    if m.fee_receiver_locked or m.imo_in_progress:
        lines.append(
            f"     fees go to {m.fee_receiver} ({'locked by an IMO' if m.fee_receiver_locked else 'IMO in progress'})"
        )
    if m.scheduled_fee is not None:
        lines.append(f"     fee cut to {eth(m.scheduled_fee)} scheduled for {_when(m.scheduled_fee_at)}")
    if m.deactivation_at:
        lines.append(f"     closes to new tasks at {_when(m.deactivation_at)}")
    return lines


def _model_doc(m: ModelInfo) -> dict:
    """A model as --json prints it (`model list`, `model show`); 0 timestamps are null."""
    return {
        "model_id": m.model_id,
        "name": m.name,
        "active": m.active,
        "publisher": m.publisher,
        "fee_receiver": m.fee_receiver,
        "fee_per_task_wei": wei(m.fee_per_task),
        "weights_cid": str(cidlib.digest_to_cid(m.weights_digest)),
        "adapters": [str(cidlib.digest_to_cid(d)) for d in m.adapter_digests],
        "datasets": [
            {"dataset_id": d, "weight_bps": w} for d, w in zip(m.dataset_ids, m.dataset_weights_bps, strict=False)
        ],
        "fee_receiver_locked": m.fee_receiver_locked,
        "imo_in_progress": m.imo_in_progress,
        "scheduled_fee_wei": wei(m.scheduled_fee),
        "scheduled_fee_at": m.scheduled_fee_at or None,
        "deactivation_at": m.deactivation_at or None,
        "serving": {
            "max_new_tokens": m.serving.max_new_tokens,
            "min_cosine": m.serving.min_cosine,
            "logit_margin": m.serving.logit_margin,
        },
    }


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
