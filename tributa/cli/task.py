"""`tributa task …`: post inference tasks and read their results."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tributa.cli import account_option, pass_ctx
from tributa.cli.format import eth, hex32, parse_eth
from tributa.errors import TributaError
from tributa.registry import MAX_NEW_TOKENS_CAP
from tributa.tasks import check_input_shape, encode_input, model_fee_of, open_private_result, post_private_task, post_task, read_task


@click.group()
def task() -> None:
    """Post inference tasks (fee held in escrow) and read verified results."""


def _check_adapter(contracts, model_id: int, adapter: str) -> str:
    """The adapter's CID in the form agents name it (CIDv0), or an error, before anything is sent,
    if the model does not register it."""
    from tributa.registry import read_model
    from tributa.store import cid as cidlib

    try:
        digest = cidlib.cid_to_digest(adapter)
    except ValueError:
        raise TributaError(f"--adapter {adapter!r} is not a CID") from None
    registered = read_model(contracts.registry, model_id).adapter_digests
    if bytes(digest) not in [bytes(d) for d in registered]:
        raise TributaError(f"model {model_id} has no adapter {adapter} ({len(registered)} registered; see `tributa model list`)")
    return str(cidlib.digest_to_cid(digest))


def _check_max_new_tokens(contracts, model_id: int, wanted: int) -> None:
    """The model's fee pays for up to its registered max_new_tokens: more is refused before paying."""
    from tributa.registry import read_model

    limit = read_model(contracts.registry, model_id).serving.max_new_tokens
    if wanted > limit:
        raise TributaError(f"--max-new-tokens {wanted} is more than model {model_id} sells per task ({limit}; see `tributa model terms {model_id}`)")


@task.command("submit")
@click.option("--model", "model_id", type=int, required=True, help="registered model id (see `tributa model list`)")
@click.option("--prompt", default=None, help="generation: the prompt")
@click.option("--text", "texts", multiple=True, help="embedding: a text to embed (repeatable)")
@click.option("--input", "input_file", type=click.Path(path_type=Path), default=None, help="a JSON input file instead")
@click.option("--max-new-tokens", type=click.IntRange(1, MAX_NEW_TOKENS_CAP), default=None,
              help="generation: at most the model's registered limit (see `tributa model terms`)")
@click.option("--adapter", default=None,
              help="generation: run this one of the model's adapters (its CID, see `tributa model list`); default: its first")
@click.option("--chat", is_flag=True, help="generation: wrap the prompt in the model's chat template as one user turn (instruct models)")
@click.option("--fee", default=None, help="ETH to escrow (default: twice the model's minimum)")
@click.option("--deadline-s", type=click.IntRange(10, 30 * 24 * 3600), default=600, show_default=True)
@click.option("--k", type=click.IntRange(1, 5), default=1, show_default=True, help="agents that must agree")
@click.option("--max-model-fee", default=None,
              help="ETH: the highest model fee you accept (default: the model's fee shown now); "
                   "the escrow refuses the task if the publisher raised it above this")
@click.option("--private", "private_task", is_flag=True,
              help="seal the input to the oracle and the output to you: the store only holds ciphertext")
@account_option("requester")
@pass_ctx
def submit(ctx, model_id, prompt, texts, input_file, max_new_tokens, adapter, chat, fee, deadline_s, k, max_model_fee, private_task, account_spec) -> None:
    """Store the input and post a task."""
    if input_file is not None:
        if prompt or texts or chat:
            raise TributaError("give --input or --prompt/--text/--chat, not both")
        if not input_file.is_file():
            raise TributaError(f"input file {input_file} does not exist")
        input_bytes = input_file.read_bytes()
        check_input_shape(input_bytes, str(input_file))
    else:
        if adapter is not None:
            adapter = _check_adapter(ctx.contracts, model_id, adapter)
        if max_new_tokens is not None:
            _check_max_new_tokens(ctx.contracts, model_id, max_new_tokens)
        input_bytes = encode_input(prompt=prompt, texts=list(texts), max_new_tokens=max_new_tokens, adapter=adapter, chat=chat)
    fee_wei = parse_eth(fee) if fee is not None else None
    max_fee_wei = parse_eth(max_model_fee) if max_model_fee is not None else None
    signer = ctx.signer(account_spec, "requester")
    # The fee shown is the fee accepted: the escrow refuses the task if it rose meanwhile.
    shown_fee = model_fee_of(ctx.contracts, model_id)
    max_fee_wei = shown_fee if max_fee_wei is None else max_fee_wei
    if private_task:
        posted = post_private_task(
            ctx.contracts, signer, ctx.store, model_id, input_bytes, ctx.settings.oracle_url,
            fee=fee_wei, deadline_s=deadline_s, k=k, max_model_fee=max_fee_wei,
        )
    else:
        posted = post_task(ctx.contracts, signer, ctx.store, model_id, input_bytes, fee_wei, deadline_s, k, max_fee_wei)
    click.echo(
        f"task {posted.task_id} posted: model {model_id} (model fee {eth(shown_fee)}, max {eth(max_fee_wei)}), "
        f"fee {eth(posted.fee)}, input {posted.input_cid}"
    )
    click.echo(f"  tx {posted.tx.tx_hash} (gas {posted.tx.gas_used})")


@task.command("show")
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--private", "private_task", is_flag=True, help="open the sealed result with your key (private tasks)")
@account_option("requester")
@pass_ctx
def show(ctx, task_id, as_json, private_task, account_spec) -> None:
    """A task's state, fee split, result and attribution."""
    view = read_task(ctx.contracts, task_id)
    result_text = None
    if private_task:
        signer = ctx.signer(account_spec, "requester")
        output = open_private_result(ctx.contracts, signer, ctx.store, view, ctx.settings.oracle_url)
        result_text = output.decode("utf-8", "replace")
    elif view.result_cid:
        try:
            result_text = ctx.store.get_bytes(view.result_cid).decode("utf-8", "replace")
        except Exception as exc:  # the result may live only in the oracle's store
            result_text = f"(not in the local store: {exc})"
    if as_json:
        out = {
            "task_id": view.task_id,
            "state": view.state,
            "model_id": view.model_id,
            "requester": view.requester,
            "fee_wei": view.fee,
            "input_cid": view.input_cid,
            "result_cid": view.result_cid,
            "attribution_cid": view.attribution_cid,
            "failure": view.failure,
            "settlement": {k: (hex32(v) if isinstance(v, bytes) else v) for k, v in (view.settlement or {}).items()},
            "result": result_text,
        }
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"task {view.task_id}: {view.state}")
    click.echo(f"  model {view.model_id}, requester {view.requester}, fee {eth(view.fee)}, k={view.k}")
    click.echo(f"  input  {view.input_cid}")
    if view.failure:
        click.echo(f"  failed: {view.failure}")
    if view.settlement:
        s = view.settlement
        click.echo(f"  result {view.result_cid}")
        click.echo(
            f"  paid: agents {eth(s['agent_fee'])}, model {eth(s['model_fee'])}, data {eth(s['data_share'])}, "
            f"protocol {eth(s['protocol_fee'])}, refund {eth(s['refund'])}  (tx {s['tx']})"
        )
        if result_text is not None:
            click.echo(f"  output: {result_text[:400]}")
    for line in _attribution_lines(ctx, view):
        click.echo(line)


def _attribution_lines(ctx, view) -> list[str]:
    cid = view.attribution_cid
    if not cid:
        return []
    try:
        envelope = json.loads(ctx.store.get_bytes(cid))
    except Exception as exc:  # the record may live only in the oracle's store
        return [f"  attribution {cid} (not readable here: {exc})"]
    settlement = envelope.get("settlement", {})
    lines = [f"  attribution {cid} ({settlement.get('source', '?')})"]
    for dataset_id, bps in zip(settlement.get("dataset_ids", []), settlement.get("weights_bps", [])):
        lines.append(f"    dataset {dataset_id}: {bps / 100:.2f}% of the data share")
    record = envelope.get("record") or {}
    ids = envelope.get("datasets", {})
    for span in record.get("spans", [])[:5]:
        source = ids.get(span.get("dataset_id"), span.get("dataset_id"))
        lines.append(f"    span [{span.get('output_start')}:{span.get('output_end')}] from dataset {source}: {span.get('text', '')[:70]!r}")
    return lines


@task.command("refund")
@click.argument("task_id", type=int)
@account_option("requester")
@pass_ctx
def refund(ctx, task_id, account_spec) -> None:
    """Refund a failed task, or an unsettled one past its deadline (credits the requester)."""
    signer = ctx.signer(account_spec, "requester")
    result = signer.transact(ctx.contracts.escrow.functions.refund(task_id), action="refund")
    click.echo(f"task {task_id} refunded to its requester's balance (tx {result.tx_hash}); `tributa account withdraw` pays it out")
