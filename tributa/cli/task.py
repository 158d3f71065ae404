"""`tributa task …`: post inference tasks and read their results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from tributa.cli import account_option, pass_ctx, upload_option
from tributa.cli.format import emit_json, eth, hex32, json_option, parse_eth, utc_time, wei
from tributa.errors import TributaError
from tributa.registry import MAX_NEW_TOKENS_CAP
from tributa.tasks import (
    STATES,
    FeeSplit,
    TaskView,
    WaitTimeout,
    check_input_shape,
    default_fee,
    encode_input,
    expected_split,
    list_tasks,
    model_fee_of,
    open_private_result,
    post_private_task,
    post_task,
    read_content,
    read_task,
    wait_until_final,
)

TASK_STATES = [name for name in STATES.values() if name != "unknown"]  # open, settled, failed, refunded


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
        raise TributaError(
            f"model {model_id} has no adapter {adapter} ({len(registered)} registered; see `tributa model list`)"
        )
    return str(cidlib.digest_to_cid(digest))


def _check_max_new_tokens(contracts, model_id: int, wanted: int) -> None:
    """The model's fee pays for up to its registered max_new_tokens: more is refused before paying."""
    from tributa.registry import read_model

    limit = read_model(contracts.registry, model_id).serving.max_new_tokens
    if wanted > limit:
        raise TributaError(
            f"--max-new-tokens {wanted} is more than model {model_id} sells per task ({limit}; see `tributa model terms {model_id}`)"
        )


# The most input bytes an agent runs (tributa.runtime.jobs.MAX_INPUT_BYTES, not imported here: it
# loads torch); a larger input is failed and refunded by every agent, so it is refused before paying.
AGENT_MAX_INPUT_BYTES = 64 * 1024


def _check_input_size(input_bytes: bytes) -> None:
    if len(input_bytes) > AGENT_MAX_INPUT_BYTES:
        raise TributaError(
            f"the input is {len(input_bytes):,} bytes; agents run inputs of at most "
            f"{AGENT_MAX_INPUT_BYTES:,} bytes, so the task would fail and be refunded"
        )


def _check_model_kind(ctx, model_id: int, input_bytes: bytes, input_flag: str | None, quiet: bool) -> None:
    """A prompt to an embedding model, or texts to a generation model, refused before paying when
    the model's kind is known (tributa.model_kind); unknown, the task is sent as given."""
    from tributa.model_kind import EMBEDDING, GENERATION, registered_kind
    from tributa.registry import read_model

    wants = GENERATION if "prompt" in json.loads(input_bytes) else EMBEDDING
    weights = read_model(ctx.contracts.registry, model_id).weights_digest
    kind = registered_kind(ctx.contracts, ctx.store, ctx.settings.oracle_url, weights)
    if not kind.known:
        if not quiet and click.get_text_stream("stderr").isatty():
            click.echo(f"warning: model {model_id}'s kind is {kind}; sending the task as given", err=True)
        return
    if kind.kind != wants:
        given, needed = ('"prompt"', '"texts"') if wants == GENERATION else ('"texts"', '"prompt"')
        if input_flag is None:
            given, needed = ("--prompt", "--text") if wants == GENERATION else ("--text", "--prompt")
        where = f" in {input_flag}" if input_flag else ""
        raise TributaError(
            f"model {model_id} is {'an' if kind.kind == EMBEDDING else 'a'} {kind.kind} model: "
            f"give {needed}{where}, not {given} (see `tributa model show {model_id}`)"
        )


# `task wait` / `task submit --wait` exit codes (README, "Using it"); 1 stays "error", 2 "usage".
EXIT_FAILED = 3  # the task ended failed or refunded
EXIT_TIMEOUT = 4  # the task was not final within --timeout-s


class StillOpen(click.ClickException):
    """`Error: …` as every error prints, with the timeout's own exit code."""

    exit_code = EXIT_TIMEOUT


# Shared by `task wait` and `task submit --wait`.
timeout_option = click.option(
    "--timeout-s",
    type=click.FloatRange(0),
    default=900.0,
    show_default=True,
    help="waiting: give up (exit 4) if the task is not settled, failed or refunded by then",
)
quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="nothing on stderr but errors and prompts (no progress, no fee split)"
)


@task.command("submit")
@click.option("--model", "model_id", type=int, required=True, help="registered model id (see `tributa model list`)")
@click.option("--prompt", default=None, help="generation: the prompt")
@click.option("--text", "texts", multiple=True, help="embedding: a text to embed (repeatable)")
@click.option("--input", "input_file", type=click.Path(path_type=Path), default=None, help="a JSON input file instead")
@click.option(
    "--max-new-tokens",
    type=click.IntRange(1, MAX_NEW_TOKENS_CAP),
    default=None,
    help="generation: at most the model's registered limit (see `tributa model terms`)",
)
@click.option(
    "--adapter",
    default=None,
    help="generation: run this one of the model's adapters (its CID, see `tributa model list`); default: its first",
)
@click.option(
    "--chat",
    is_flag=True,
    help="generation: wrap the prompt in the model's chat template as one user turn (instruct models)",
)
@click.option(
    "--fee", default=None, help="ETH to escrow (default: twice the model's minimum, rounded up to 2 significant digits)"
)
@click.option("--deadline-s", type=click.IntRange(10, 30 * 24 * 3600), default=600, show_default=True)
@click.option("--k", type=click.IntRange(1, 5), default=1, show_default=True, help="agents that must agree")
@click.option(
    "--max-model-fee",
    default=None,
    help="ETH: the highest model fee you accept (default: the model's fee shown now); "
    "the escrow refuses the task if the publisher raised it above this",
)
@click.option(
    "--private",
    "private_task",
    is_flag=True,
    help="seal the input to the oracle and the output to you: the store only holds ciphertext",
)
@click.option("-y", "--yes", is_flag=True, help="post without asking (it only asks when stdin is a terminal)")
@click.option("--wait", "wait", is_flag=True, help="then follow the task to its end and show it, as `task wait` does")
@timeout_option
@quiet_option
@upload_option
@json_option
@account_option("requester")
@pass_ctx
def submit(
    ctx,
    model_id,
    prompt,
    texts,
    input_file,
    max_new_tokens,
    adapter,
    chat,
    fee,
    deadline_s,
    k,
    max_model_fee,
    private_task,
    yes,
    wait,
    timeout_s,
    quiet,
    upload,
    as_json,
    account_spec,
) -> None:
    """Store the input and post a task (showing the fee split first)."""
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
        input_bytes = encode_input(
            prompt=prompt, texts=list(texts), max_new_tokens=max_new_tokens, adapter=adapter, chat=chat
        )
    fee_wei = parse_eth(fee) if fee is not None else None
    max_fee_wei = parse_eth(max_model_fee) if max_model_fee is not None else None
    _check_input_size(input_bytes)
    _check_model_kind(ctx, model_id, input_bytes, "--input" if input_file is not None else None, quiet)
    serving = _agents_for(ctx.contracts, model_id, k)
    signer = ctx.signer(account_spec, "requester")
    # The fee shown is the fee accepted: the escrow refuses the task if it rose meanwhile.
    shown_fee = model_fee_of(ctx.contracts, model_id)
    max_fee_wei = shown_fee if max_fee_wei is None else max_fee_wei
    fee_wei = default_fee(ctx.contracts, model_id, max_fee_wei) if fee_wei is None else fee_wei
    split = expected_split(ctx.contracts, fee_wei, shown_fee)
    stdin, stderr = click.get_text_stream("stdin"), click.get_text_stream("stderr")
    ask = not yes and stdin.isatty()  # scripts and pipes are never asked
    # Shown where someone can read it before the send; unattended, an error stays the only line
    # (--json carries the split either way).
    if ask or (not quiet and (stdin.isatty() or stderr.isatty())):
        for line in _split_lines(split, model_id, max_fee_wei, k):
            click.echo(line, err=True)
    if ask:
        click.confirm(f"post this task and escrow {eth(fee_wei)}?", abort=True, err=True)
    if private_task:
        posted = post_private_task(
            ctx.contracts,
            signer,
            ctx.store,
            model_id,
            input_bytes,
            ctx.settings.oracle_url,
            fee=fee_wei,
            deadline_s=deadline_s,
            k=k,
            max_model_fee=max_fee_wei,
        )
    else:
        posted = post_task(ctx.contracts, signer, ctx.store, model_id, input_bytes, fee_wei, deadline_s, k, max_fee_wei)
    _warn_unserved(model_id, serving, quiet)
    # The oracle (on its own machine) needs the input: it waits INPUT_UPLOAD_GRACE_S for it.
    uploaded = ctx.upload(signer, posted.input_cid, f"task:{posted.task_id}") if upload else {"uploaded": None}
    lines = [
        f"task {posted.task_id} posted: model {model_id} (model fee {eth(shown_fee)}, max {eth(max_fee_wei)}), "
        f"fee {eth(posted.fee)}, input {posted.input_cid}",
        f"  tx {posted.tx.tx_hash} (gas {posted.tx.gas_used})",
    ]
    if wait:
        # stdout is kept for the task's final view (one JSON document with --json)
        for line in lines:
            if not as_json:
                click.echo(line)
            elif not quiet:
                click.echo(line, err=True)
        _wait_and_show(ctx, posted.task_id, timeout_s, quiet, as_json, private_task, account_spec)
    elif as_json:
        emit_json(
            {
                "task_id": posted.task_id,
                "model_id": model_id,
                "requester": signer.address,
                "input_cid": posted.input_cid,
                "fee_wei": wei(posted.fee),
                "model_fee_wei": wei(shown_fee),
                "max_model_fee_wei": wei(max_fee_wei),
                "split": _split_doc(split),
                "tx": posted.tx.tx_hash,
                "gas_used": posted.tx.gas_used,
                "input_uploaded": uploaded["uploaded"],
            }
        )
    else:
        for line in lines:
            click.echo(line)


def _agents_for(contracts, model_id: int, k: int) -> int:
    """How many staked agents serve the model; refuses a k that no set of them could meet. None
    at all is only a warning, after posting: an agent may register before the deadline."""
    from tributa.staking import agents_serving

    serving = len(agents_serving(contracts, model_id))
    if 0 < serving < k:
        raise TributaError(
            f"--k {k} needs {k} distinct agents, but {serving} staked agent"
            f"{'s serve' if serving != 1 else ' serves'} model {model_id}"
        )
    return serving


def _warn_unserved(model_id: int, serving: int, quiet: bool) -> None:
    if serving == 0 and not quiet:
        click.echo(
            f"warning: no staked agent serves model {model_id} now; unless one registers, "
            "the task waits for its deadline and is refunded",
            err=True,
        )


def _split_lines(split: FeeSplit, model_id: int, max_model_fee: int, k: int) -> list[str]:
    def pct(bps: int) -> str:
        return f"{bps / 100:.2f}%"

    return [
        f"fee {eth(split.fee)} for a task on model {model_id} (k={k}), split at settlement:",
        f"  protocol fee  {eth(split.protocol_fee)} ({pct(split.protocol_fee_bps)})",
        f"  data share    {eth(split.data_share)} ({pct(split.data_share_bps)}, to the datasets the attribution names; refunded if none)",
        f"  model fee     {eth(split.model_fee)} (you accept up to {eth(max_model_fee)})",
        f"  agents        up to {eth(split.agents_max)} (the oracle's fee policy; what they are not paid is refunded)",
    ]


def _split_doc(split: FeeSplit) -> dict:
    return {
        "fee_wei": wei(split.fee),
        "protocol_fee_wei": wei(split.protocol_fee),
        "protocol_fee_bps": split.protocol_fee_bps,
        "data_share_wei": wei(split.data_share),
        "data_share_bps": split.data_share_bps,
        "model_fee_wei": wei(split.model_fee),
        "agents_max_wei": wei(split.agents_max),
    }


@task.command("wait")
@click.argument("task_id", type=int)
@timeout_option
@quiet_option
@click.option("--private", "private_task", is_flag=True, help="open the sealed result with your key (private tasks)")
@json_option
@account_option("requester")
@pass_ctx
def wait_cmd(ctx, task_id, timeout_s, quiet, private_task, as_json, account_spec) -> None:
    """Follow TASK_ID until it is settled, failed or refunded, then show it as `task show` does.

    Exit 0 settled, 3 failed or refunded, 4 still open after --timeout-s."""
    _wait_and_show(ctx, task_id, timeout_s, quiet, as_json, private_task, account_spec)


def _wait_and_show(ctx, task_id, timeout_s, quiet, as_json, private_task, account_spec) -> None:
    began = time.monotonic()
    said_state: str | None = None  # the last state a line reported, and when
    said_at = began

    def progress(views) -> None:
        nonlocal said_state, said_at
        state, now = views[task_id].state, time.monotonic()
        if quiet or (state == said_state and now - said_at < 15):  # a line per change, and one every 15 s
            return
        said_state, said_at = state, now
        click.echo(f"task {task_id}: {state} after {now - began:.0f}s", err=True)

    try:
        view = wait_until_final(ctx.contracts, [task_id], timeout_s, on_poll=progress, poll_s=0.5)[task_id]
    except WaitTimeout as exc:
        raise StillOpen(
            f"task {task_id} is still {exc.views[task_id].state} after {timeout_s:g}s "
            f"(`tributa task wait {task_id}` to keep waiting)"
        ) from None
    _show_view(ctx, view, as_json, private_task, account_spec)
    if view.state != "settled":
        raise SystemExit(EXIT_FAILED)


@task.command("list")
@click.option("--mine", is_flag=True, help="your account's tasks (the default)")
@click.option("--all", "all_tasks", is_flag=True, help="everyone's tasks, not only yours")
@click.option("--requester", default=None, help="this requester's tasks (default: your account's)")
@click.option("--state", type=click.Choice(TASK_STATES), default=None, help="only tasks in this state")
@click.option(
    "--model", "model_id", type=click.IntRange(0, 2**256 - 1), default=None, help="only tasks on this model id"
)
@click.option(
    "--limit", type=click.IntRange(1), default=20, show_default=True, help="the newest this many (after the filters)"
)
@json_option
@account_option("requester")
@pass_ctx
def list_cmd(ctx, mine, all_tasks, requester, state, model_id, limit, as_json, account_spec) -> None:
    """Your tasks (--mine, the default; everyone's with --all), newest first, optionally only
    those in --state or on --model."""
    from tributa.chain.accounts import checksum

    if sum((mine, all_tasks, requester is not None)) > 1:
        raise TributaError("give one of --mine, --all or --requester")
    who = None if all_tasks else checksum(requester) if requester else ctx.signer(account_spec, "requester").address
    views = list_tasks(ctx.contracts, who, limit, state=state, model_id=model_id)
    if as_json:
        emit_json({"requester": who, "state": state, "model_id": model_id, "tasks": [_task_doc(v) for v in views]})
        return
    if not views:
        click.echo(
            "no tasks"
            + (f" {state}" if state else "")
            + (f" on model {model_id}" if model_id is not None else "")
            + (f" posted by {who}" if who else "")
        )
    for v in views:
        click.echo(
            f"{v.task_id:>4}  {v.state:<8} model {v.model_id:<3} fee {eth(v.fee):<14} k={v.k}  "
            f"deadline {utc_time(v.deadline)}" + ("" if who else f"  requester {v.requester}")
        )


def _task_doc(view: TaskView) -> dict:
    """The fields of a task the escrow stores, as --json prints them (`task list`, `task show`)."""
    return {
        "task_id": view.task_id,
        "state": view.state,
        "model_id": view.model_id,
        "requester": view.requester,
        "fee_wei": wei(view.fee),
        "model_fee_wei": wei(view.model_fee),
        "deadline": view.deadline,
        "k": view.k,
        "input_cid": view.input_cid,
    }


@task.command("show")
@click.argument("task_id", type=int)
@json_option
@click.option("--private", "private_task", is_flag=True, help="open the sealed result with your key (private tasks)")
@account_option("requester")
@pass_ctx
def show(ctx, task_id, as_json, private_task, account_spec) -> None:
    """A task's state, fee split, result and attribution."""
    _show_view(ctx, read_task(ctx.contracts, task_id), as_json, private_task, account_spec)


def _result_bytes(ctx, view, private_task, account_spec) -> tuple[bytes | None, str | None]:
    """The task's output and, when it cannot be read here, why not."""
    if private_task:
        signer = ctx.signer(account_spec, "requester")
        return open_private_result(ctx.contracts, signer, ctx.store, view, ctx.settings.oracle_url), None
    if not view.result_cid:
        return None, None
    try:
        with ctx.content_api() as remote:
            return read_content(ctx.store, remote, view.result_cid), None
    except TributaError as exc:  # neither here nor at the oracle (or the oracle is away)
        return None, f"not in the local store, nor readable from the oracle: {exc}"


def _show_view(ctx, view, as_json, private_task, account_spec) -> None:
    output, missing = _result_bytes(ctx, view, private_task, account_spec)
    if as_json:
        emit_json(_task_show_doc(ctx, view, output, missing))
        return
    result_text = output.decode("utf-8", "replace") if output is not None else f"({missing})" if missing else None
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
    for line in _attribution_lines(_attribution_doc(ctx, view)):
        click.echo(line)


def _task_show_doc(ctx, view, output: bytes | None, missing: str | None) -> dict:
    result, result_error = None, missing
    if output is not None:
        try:
            result = json.loads(output)
        except ValueError:
            result_error = "the output is not JSON"
    s = view.settlement
    return {
        **_task_doc(view),
        "result_cid": view.result_cid,
        "result": result,
        "result_error": result_error,
        "failure": view.failure,
        "refund_tx": view.refund_tx,
        "settlement": None
        if not s
        else {
            "tx": s["tx"],
            "block": s["block"],
            "agents": list(s["agents"]),
            "agent_fee_wei": wei(s["agent_fee"]),
            "model_fee_wei": wei(s["model_fee"]),
            "data_share_wei": wei(s["data_share"]),
            "protocol_fee_wei": wei(s["protocol_fee"]),
            "refund_wei": wei(s["refund"]),
            "result_digest": hex32(s["result_digest"]),
            "attribution_digest": hex32(s["attribution_digest"]),
        },
        "attribution": _attribution_doc(ctx, view),
    }


def _attribution_doc(ctx, view) -> dict | None:
    """The task's attribution (tributa.attribution), its record read here, else from the oracle."""
    from tributa.attribution import attribution_doc

    def read(cid: str) -> bytes:
        with ctx.content_api() as remote:
            return read_content(ctx.store, remote, cid)

    return attribution_doc(ctx.contracts, view, read)


def _attribution_lines(doc: dict | None) -> list[str]:
    if doc is None or doc["cid"] is None:
        return []
    if doc["record_error"]:
        return [f"  attribution {doc['cid']} ({doc['record_error']})"]
    lines = [f"  attribution {doc['cid']} ({doc['source'] or '?'})"]
    for weight in doc["weights"]:
        lines.append(f"    dataset {weight['dataset_id']}: {weight['weight_bps'] / 100:.2f}% of the data share")
    for span in doc["spans"][:5]:
        lines.append(
            f"    span [{span['output_start']}:{span['output_end']}] from dataset {span['dataset_id']}: {span['text'][:70]!r}"
        )
    return lines


@task.command("refund")
@click.argument("task_id", type=int)
@account_option("requester")
@pass_ctx
def refund(ctx, task_id, account_spec) -> None:
    """Refund a failed task, or an unsettled one past its deadline (credits the requester)."""
    signer = ctx.signer(account_spec, "requester")
    result = signer.transact(ctx.contracts.escrow.functions.refund(task_id), action="refund")
    click.echo(
        f"task {task_id} refunded to its requester's balance (tx {result.tx_hash}); `tributa account withdraw` pays it out"
    )
