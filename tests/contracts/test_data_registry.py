"""DataRegistry: datasets, contributors roots, models, pricing, access control,
and the security review's attacks (issue 10, findings 5, 7, 8a, 8c): digest
squatting and front-running, revenue taken away after an IMO, and IMOs across a
launcher switch."""

import boa
import pytest
from eth_abi import encode
from eth_utils import keccak

from tests.contracts import helpers as h
from tributa.merkle import contributors_proof, contributors_root, sort_contributors

ZERO32 = b"\x00" * 32


def _contributors(n, shares=None):
    addrs = [boa.env.generate_address() for _ in range(n)]
    if shares is None:
        shares = [h.BPS // n] * n
        shares[-1] += h.BPS - sum(shares)
    return sort_contributors(zip(addrs, shares, strict=False))


def _launcher(w, alias="launcher"):
    """A plain account made the registry's IMO launcher."""
    launcher = h.funded_address(alias)
    with boa.env.prank(w.owner):
        w.registry.set_imo_launcher(launcher)
    return launcher


def _lock(w, model_id=1):
    """An IMO begun and ended successfully: the fee receiver is locked to a token."""
    launcher, token = _launcher(w), boa.env.generate_address("token")
    with boa.env.prank(launcher):
        w.registry.begin_imo(model_id)
        w.registry.end_imo(model_id, token)
    return launcher, token


# ---------------------------------------------------------------- datasets


def test_register_dataset__valid_input__stores_dataset_root_and_emits_events(w):
    c, s = _contributors(4)
    with boa.env.prank(w.stranger):
        did = h.commit_and_register(w.registry, h.digest("c"), h.digest("m"), c, s, "terms")
    logs = w.registry.get_logs()
    assert did == 3  # two datasets registered by the fixture
    assert w.registry.dataset_count() == 3
    assert w.registry.dataset_id_of(h.digest("c")) == 3
    d = w.registry.dataset(did)
    root = contributors_root(c, s)
    assert d == (h.digest("c"), h.digest("m"), w.stranger, root, 1, 4, "terms", True)
    assert w.registry.contributors_root(did, 1) == root
    assert w.registry.dataset_version(did) == 1
    assert w.registry.dataset_owner(did) == w.stranger
    reg, cs = logs
    assert type(reg).__name__ == "DatasetRegistered"
    assert (reg.dataset_id, reg.owner, reg.content_digest, reg.metadata_digest, reg.terms) == (
        3,
        w.stranger,
        h.digest("c"),
        h.digest("m"),
        "terms",
    )
    assert type(cs).__name__ == "ContributorsSet"
    assert (cs.dataset_id, cs.version, cs.contributors_root) == (3, 1, root)
    assert [str(a) for a in cs.contributors] == c and list(cs.shares_bps) == s


def test_register_dataset__single_contributor__root_is_the_leaf(w):
    c, s = _contributors(1)
    did = h.commit_and_register(w.registry, h.digest("one"), ZERO32, c, s, "")
    assert w.registry.contributors_root(did, 1) == w.registry.contributors_leaf(c[0], 10_000)
    assert w.registry.verify_share(did, 1, c[0], 10_000, [])


def test_register_dataset__ids_start_at_one(w):
    assert w.registry.dataset(1)[4] == 1  # version of dataset 1
    assert w.registry.dataset(0) == (ZERO32, ZERO32, h.ZERO_ADDRESS, ZERO32, 0, 0, "", False)


def test_register_dataset__zero_content_digest__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: zero content digest"):
        h.commit_and_register(w.registry, ZERO32, ZERO32, c, s, "")


def test_register_dataset__digest_already_registered__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: dataset already registered"):
        h.commit_and_register(w.registry, h.digest("content-small"), ZERO32, c, s, "")


def test_register_dataset__no_contributors__reverts(w):
    with boa.reverts("registry: no contributors"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, [], [], "")


def test_register_dataset__length_mismatch__reverts(w):
    c, s = _contributors(3)
    with boa.reverts("registry: length mismatch"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, c, s[:2], "")


def test_register_dataset__more_than_1000_contributors__is_rejected(w):
    c = [boa.env.generate_address() for _ in range(1001)]
    with pytest.raises(Exception):  # noqa: B017 -- rejected by the ABI bound of DynArray[address, 1000]: no revert reason to match
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, c, [1] * 1001, "")
    assert w.registry.MAX_CONTRIBUTORS() == 1000


def test_register_dataset__zero_address__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: zero address contributor"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, [h.ZERO_ADDRESS, *c[1:]], s, "")


def test_register_dataset__unsorted_contributors__reverts(w):
    c, s = _contributors(3)
    with boa.reverts("registry: contributors not strictly ascending"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, list(reversed(c)), s, "")


def test_register_dataset__duplicate_contributor__reverts(w):
    c, _ = _contributors(2)
    with boa.reverts("registry: contributors not strictly ascending"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, [c[0], c[0]], [5000, 5000], "")


def test_register_dataset__zero_share__reverts(w):
    c, _ = _contributors(3)
    with boa.reverts("registry: zero share"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, c, [5000, 0, 5000], "")


@pytest.mark.parametrize("shares", [[5000, 4999], [5000, 5001]])
def test_register_dataset__shares_not_summing_to_10000__reverts(w, shares):
    c, _ = _contributors(2)
    with boa.reverts("registry: shares must sum to 10000"):
        h.commit_and_register(w.registry, h.digest("x"), ZERO32, c, shares, "")


def test_update_contributors__by_owner__bumps_version_and_keeps_old_root(w):
    did, c_old, s_old = w.dataset_small
    old_root = w.registry.contributors_root(did, 1)
    c, s = _contributors(5)
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(did, c, s)
    (log,) = h.events(w.registry, "ContributorsSet")
    new_root = contributors_root(c, s)
    assert (log.dataset_id, log.version, log.contributors_root) == (did, 2, new_root)
    assert w.registry.dataset_version(did) == 2
    assert w.registry.dataset(did)[3] == new_root and w.registry.dataset(did)[5] == 5
    assert w.registry.contributors_root(did, 1) == old_root == contributors_root(c_old, s_old)
    assert w.registry.verify_share(did, 1, c_old[0], s_old[0], contributors_proof(c_old, s_old, 0))
    assert not w.registry.verify_share(did, 2, c_old[0], s_old[0], contributors_proof(c_old, s_old, 0))
    assert w.registry.verify_share(did, 2, c[4], s[4], contributors_proof(c, s, 4))


def test_update_contributors__by_stranger__reverts(w):
    c, s = _contributors(2)
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the dataset owner"):
        w.registry.update_contributors(1, c, s)


def test_update_contributors__unknown_dataset__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: unknown dataset"):
        w.registry.update_contributors(99, c, s)


def test_update_contributors__invalid_list__reverts_like_register(w):
    c, _s = _contributors(2)
    with boa.env.prank(w.data_owner), boa.reverts("registry: shares must sum to 10000"):
        w.registry.update_contributors(1, c, [1, 2])


def test_update_terms__by_owner__stores_and_emits(w):
    with boa.env.prank(w.data_owner):
        w.registry.update_terms(1, "research only")
    (log,) = h.events(w.registry, "DatasetTermsUpdated")
    assert (log.dataset_id, log.terms) == (1, "research only")
    assert w.registry.dataset(1)[6] == "research only"


def test_update_terms__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the dataset owner"):
        w.registry.update_terms(1, "mine now")


def test_deactivate_dataset__by_owner__marks_inactive_once(w):
    with boa.env.prank(w.data_owner):
        w.registry.deactivate_dataset(1)
        (log,) = h.events(w.registry, "DatasetDeactivated")
        assert log.dataset_id == 1
        assert w.registry.dataset(1)[7] is False
        with boa.reverts("registry: dataset inactive"):
            w.registry.deactivate_dataset(1)
    # roots stay valid for claims
    did, c, s = w.dataset_small
    assert w.registry.verify_share(did, 1, c[0], s[0], contributors_proof(c, s, 0))


def test_deactivate_dataset__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the dataset owner"):
        w.registry.deactivate_dataset(1)


def test_verify_share__wrong_share_account_or_version__is_false(w):
    did, c, s = w.dataset_ten
    proof = contributors_proof(c, s, 3)
    assert w.registry.verify_share(did, 1, c[3], s[3], proof)
    assert not w.registry.verify_share(did, 1, c[3], s[3] + 1, proof)
    assert not w.registry.verify_share(did, 1, c[4], s[3], proof)
    assert not w.registry.verify_share(did, 2, c[3], s[3], proof)
    assert not w.registry.verify_share(99, 1, c[3], s[3], proof)


def test_compute_contributors_root__matches_python_and_validates(w):
    c, s = _contributors(7)
    assert w.registry.compute_contributors_root(c, s) == contributors_root(c, s)
    with boa.reverts("registry: contributors not strictly ascending"):
        w.registry.compute_contributors_root(list(reversed(c)), s)


# ------------------------------------------------------------------ models


def test_register_model__valid_input__stores_model_and_emits(w):
    with boa.env.prank(w.stranger):
        mid = w.registry.register_model(
            "m2", h.digest("w2"), [h.digest("a1"), h.digest("a2")], [2], [10_000], 123, w.fee_receiver
        )
    (log,) = h.events(w.registry, "ModelRegistered")
    assert mid == 2 and w.registry.model_count() == 2
    assert (log.model_id, log.publisher, log.name, log.weights_digest, log.fee_per_task, log.fee_receiver) == (
        2,
        w.stranger,
        "m2",
        h.digest("w2"),
        123,
        w.fee_receiver,
    )
    assert list(log.adapter_digests) == [h.digest("a1"), h.digest("a2")]
    assert list(log.dataset_ids) == [2] and list(log.dataset_weights_bps) == [10_000]
    assert w.registry.model(mid) == (h.digest("w2"), w.stranger, w.fee_receiver, 123, True, "m2")
    assert w.registry.model_pricing(mid) == (True, 123, w.fee_receiver)
    assert w.registry.model_publisher(mid) == w.stranger
    assert w.registry.model_adapters(mid) == [h.digest("a1"), h.digest("a2")]
    assert w.registry.model_dataset_ids(mid) == [2]
    assert w.registry.model_dataset_weights(mid) == [10_000]


def test_register_model__without_datasets__is_allowed(w):
    mid = h.register_model(w.registry, w.stranger, fee=0, name="free")
    assert w.registry.model_dataset_ids(mid) == [] and w.registry.model_pricing(mid) == (True, 0, w.stranger)


def test_model_pricing__unknown_model__is_inactive_zero(w):
    assert w.registry.model_pricing(0) == (False, 0, h.ZERO_ADDRESS)
    assert w.registry.model_pricing(42) == (False, 0, h.ZERO_ADDRESS)
    assert w.registry.model_publisher(42) == h.ZERO_ADDRESS


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(name=""), "registry: empty name"),
        (dict(weights=b"\x00" * 32), "registry: zero weights digest"),
        (dict(ids=[1, 99], bps=[5000, 5000]), "registry: unknown dataset"),
        (dict(ids=[0], bps=[10_000]), "registry: unknown dataset"),
        (dict(ids=[1, 2], bps=[10_000]), "registry: length mismatch"),
        (dict(ids=[1, 2], bps=[5000, 4000]), "registry: weights must sum to 10000"),
        (dict(receiver=h.ZERO_ADDRESS), "registry: zero fee receiver"),
        (dict(fee=2**88), "registry: fee too large"),
    ],
)
def test_register_model__bad_input__reverts(w, kwargs, reason):
    args = dict(name="m", weights=h.digest("w"), ids=[1], bps=[10_000], fee=1, receiver=w.stranger)
    args.update(kwargs)
    with boa.reverts(reason):
        w.registry.register_model(
            args["name"], args["weights"], [], args["ids"], args["bps"], args["fee"], args["receiver"]
        )


def test_set_model_fee__by_publisher__updates_pricing(w):
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 777)
    (log,) = h.events(w.registry, "ModelFeeUpdated")
    assert (log.model_id, log.fee_per_task) == (1, 777)
    assert w.registry.model_pricing(1) == (True, 777, w.fee_receiver)


def test_set_model_fee__too_large__reverts(w):
    with boa.env.prank(w.publisher), boa.reverts("registry: fee too large"):
        w.registry.set_model_fee(1, 2**88)


def test_set_model_fee__by_stranger_or_unknown_model__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the publisher"):
        w.registry.set_model_fee(1, 1)
    with boa.reverts("registry: unknown model"):
        w.registry.set_model_fee(9, 1)


def test_set_serving_terms__by_publisher__stored_logged_and_packed_apart(w):
    assert w.registry.serving_terms(1) == (0, 0, 0)  # unset: the defaults apply off-chain
    pricing = w.registry.model_pricing(1)
    with boa.env.prank(w.publisher):
        w.registry.set_serving_terms(1, 4096, 1_000_000, 50_000)
    (log,) = h.events(w.registry, "ModelServingTermsSet")
    assert (log.model_id, log.max_new_tokens, log.min_cosine_ppm, log.logit_margin_milli) == (
        1,
        4096,
        1_000_000,
        50_000,
    )
    assert w.registry.serving_terms(1) == (4096, 1_000_000, 50_000)
    assert w.registry.model_pricing(1) == pricing  # the money path is untouched
    with boa.env.prank(w.publisher):
        w.registry.set_serving_terms(1, 128, 0, 0)
    assert w.registry.serving_terms(1) == (128, 0, 0)


@pytest.mark.parametrize(
    ("terms", "reason"),
    [
        ((4097, 0, 0), "registry: max_new_tokens too large"),
        ((64, 899_999, 0), "registry: min_cosine_ppm out of range"),
        ((64, 1_000_001, 0), "registry: min_cosine_ppm out of range"),
        ((64, 0, 50_001), "registry: logit margin too large"),
    ],
)
def test_set_serving_terms__out_of_bounds__reverts_and_keeps_the_old_terms(w, terms, reason):
    with boa.env.prank(w.publisher):
        w.registry.set_serving_terms(1, 100, 990_000, 1_500)
        with boa.reverts(reason):
            w.registry.set_serving_terms(1, *terms)
    assert w.registry.serving_terms(1) == (100, 990_000, 1_500)


def test_set_serving_terms__by_stranger_or_unknown_model__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the publisher"):
        w.registry.set_serving_terms(1, 64, 0, 0)
    with boa.reverts("registry: unknown model"):
        w.registry.set_serving_terms(9, 64, 0, 0)


def test_set_fee_receiver__by_publisher__updates_receiver(w):
    new = boa.env.generate_address()
    with boa.env.prank(w.publisher):
        w.registry.set_fee_receiver(1, new)
    (log,) = h.events(w.registry, "ModelFeeReceiverUpdated")
    assert (log.model_id, log.fee_receiver) == (1, new)
    assert w.registry.model_pricing(1) == (True, w.model_fee, new)


def test_set_fee_receiver__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the publisher"):
        w.registry.set_fee_receiver(1, w.stranger)


def test_set_fee_receiver__old_launcher_path__is_refused(w):
    # The launcher no longer sets receivers with set_fee_receiver: it ends its IMO with end_imo.
    launcher = _launcher(w)
    with boa.env.prank(launcher), boa.reverts("registry: caller is not the publisher"):
        w.registry.set_fee_receiver(1, launcher)


def test_set_fee_receiver__zero_or_unknown_model__reverts(w):
    with boa.env.prank(w.publisher), boa.reverts("registry: zero fee receiver"):
        w.registry.set_fee_receiver(1, h.ZERO_ADDRESS)
    with boa.reverts("registry: unknown model"):
        w.registry.set_fee_receiver(5, w.stranger)


def test_set_model_active__by_publisher__toggles_pricing_flag(w):
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, False)
        (log,) = h.events(w.registry, "ModelActiveSet")
        assert (log.model_id, log.active) == (1, False)
        assert w.registry.model_pricing(1) == (False, w.model_fee, w.fee_receiver)
        w.registry.set_model_active(1, True)
    assert w.registry.model(1)[4] is True


def test_set_model_active__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the publisher"):
        w.registry.set_model_active(1, False)


def test_set_imo_launcher__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("ownable: caller is not the owner"):
        w.registry.set_imo_launcher(w.stranger)


def test_transfer_ownership__new_owner__can_set_launcher(w):
    with boa.env.prank(w.owner):
        w.registry.transfer_ownership(w.stranger)
    assert w.registry.owner() == w.stranger
    with boa.env.prank(w.stranger):
        w.registry.set_imo_launcher(w.publisher)
    assert w.registry.imo_launcher() == w.publisher


# ------------------------------------------- commit-reveal registration (finding 5)


def test_dataset_commitment__matches_keccak_of_abi_encoded_digests_registrant_and_salt(w):
    salt = b"\x07" * 32
    expected = keccak(
        encode(["bytes32", "bytes32", "address", "bytes32"], [h.digest("c"), h.digest("m"), w.stranger, salt])
    )
    assert w.registry.dataset_commitment(h.digest("c"), h.digest("m"), w.stranger, salt) == expected


def test_commit_dataset__then_reveal_a_block_later__registers_and_clears_the_commitment(w):
    c, s = _contributors(2)
    salt = b"\x01" * 32
    commitment = w.registry.dataset_commitment(h.digest("c"), h.digest("m"), w.stranger, salt)
    with boa.env.prank(w.stranger):
        w.registry.commit_dataset(commitment)
        (log,) = h.events(w.registry, "DatasetCommitted")
        assert (log.registrant, log.commitment, log.expires_at) == (w.stranger, commitment, boa.env.timestamp + 86_400)
        assert w.registry.commitment_of(w.stranger, commitment) == (boa.env.evm.patch.block_number, boa.env.timestamp)
        boa.env.time_travel(blocks=1)
        did = w.registry.register_dataset(h.digest("c"), h.digest("m"), c, s, "", salt)
    assert w.registry.dataset_owner(did) == w.stranger
    assert w.registry.commitment_of(w.stranger, commitment) == (0, 0)


def test_register_dataset__squat_public_digest_without_commit__fails(w):
    # The squatter saw the CID published and registers its digest directly.
    c, s = _contributors(2)
    squatter = h.funded_address("squatter")
    with boa.env.prank(squatter), boa.reverts("registry: no matching commitment"):
        w.registry.register_dataset(h.digest("public-cid"), ZERO32, c, s, "", b"\x00" * 32)
    assert w.registry.dataset_id_of(h.digest("public-cid")) == 0


def test_register_dataset__front_run_reveal__fails(w):
    c, s = _contributors(2)
    author, attacker = w.stranger, h.funded_address("front-runner")
    content, meta = h.digest("fresh"), h.digest("fresh-meta")
    with boa.env.prank(author):
        salt = h.commit_dataset(w.registry, content, meta)
    victim_commitment = w.registry.dataset_commitment(content, meta, author, salt)
    boa.env.time_travel(blocks=1)
    # The author's reveal is in the mempool. The attacker copies the commit and the reveal...
    with boa.env.prank(attacker):
        w.registry.commit_dataset(victim_commitment)
        with boa.reverts("registry: no matching commitment"):
            w.registry.register_dataset(content, meta, [attacker], [10_000], "", salt)
        # ... or commits on his own for the digest he just learnt, ahead of the reveal, in its block.
        own_salt = h.commit_dataset(w.registry, content, meta)
        with boa.reverts("registry: reveal too early (wait a block)"):
            w.registry.register_dataset(content, meta, [attacker], [10_000], "", own_salt)
    with boa.env.prank(author):
        did = w.registry.register_dataset(content, meta, c, s, "", salt)
    boa.env.time_travel(blocks=1)
    with boa.env.prank(attacker), boa.reverts("registry: dataset already registered"):
        w.registry.register_dataset(content, meta, [attacker], [10_000], "", own_salt)
    assert w.registry.dataset_owner(did) == author


def test_register_dataset__reveal_in_the_commit_block__reverts(w):
    c, s = _contributors(2)
    with boa.env.prank(w.stranger):
        salt = h.commit_dataset(w.registry, h.digest("c"), h.digest("m"))
        with boa.reverts("registry: reveal too early (wait a block)"):
            w.registry.register_dataset(h.digest("c"), h.digest("m"), c, s, "", salt)


def test_register_dataset__after_the_commit_window__reverts_and_a_new_commit_works(w):
    c, s = _contributors(2)
    with boa.env.prank(w.stranger):
        salt = h.commit_dataset(w.registry, h.digest("c"), h.digest("m"))
        boa.env.time_travel(seconds=w.registry.COMMIT_MAX_AGE() + 12)
        with boa.reverts("registry: commitment expired"):
            w.registry.register_dataset(h.digest("c"), h.digest("m"), c, s, "", salt)
        h.commit_dataset(w.registry, h.digest("c"), h.digest("m"), salt)  # an expired commitment may be renewed
        boa.env.time_travel(blocks=1)
        assert w.registry.register_dataset(h.digest("c"), h.digest("m"), c, s, "", salt) == 3


def test_register_dataset__other_salt_or_metadata_than_committed__reverts(w):
    c, s = _contributors(2)
    with boa.env.prank(w.stranger):
        salt = h.commit_dataset(w.registry, h.digest("c"), h.digest("m"))
        boa.env.time_travel(blocks=1)
        with boa.reverts("registry: no matching commitment"):
            w.registry.register_dataset(h.digest("c"), h.digest("m"), c, s, "", b"\x09" * 32)
        with boa.reverts("registry: no matching commitment"):
            w.registry.register_dataset(h.digest("c"), h.digest("other"), c, s, "", salt)


def test_commit_dataset__zero_or_live_duplicate__reverts(w):
    with boa.env.prank(w.stranger):
        with boa.reverts("registry: zero commitment"):
            w.registry.commit_dataset(ZERO32)
        w.registry.commit_dataset(h.digest("k"))
        with boa.reverts("registry: already committed"):
            w.registry.commit_dataset(h.digest("k"))


# ------------------------------------------------- dataset transfer and disputes


def test_transfer_dataset__two_step__hands_over_control(w):
    new_owner = h.funded_address("new-owner")
    with boa.env.prank(w.data_owner):
        w.registry.transfer_dataset(1, new_owner)
    (log,) = h.events(w.registry, "DatasetTransferStarted")
    assert (log.dataset_id, log.owner, log.pending_owner) == (1, w.data_owner, new_owner)
    assert w.registry.dataset_pending_owner(1) == new_owner
    assert w.registry.dataset_owner(1) == w.data_owner  # nothing moves until accepted
    with boa.env.prank(new_owner):
        w.registry.accept_dataset(1)
    (log,) = h.events(w.registry, "DatasetOwnerChanged")
    assert (log.dataset_id, log.previous_owner, log.new_owner) == (1, w.data_owner, new_owner)
    assert w.registry.dataset_owner(1) == new_owner and w.registry.dataset_pending_owner(1) == h.ZERO_ADDRESS
    assert w.registry.dataset(1)[4] == 1 and w.registry.dataset(1)[7] is True  # version and flag kept
    with boa.env.prank(w.data_owner), boa.reverts("registry: caller is not the dataset owner"):
        w.registry.update_terms(1, "old owner")
    with boa.env.prank(new_owner):
        w.registry.update_terms(1, "new owner")


def test_accept_dataset__by_anyone_but_the_pending_owner__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the pending owner"):
        w.registry.accept_dataset(1)
    with boa.env.prank(w.data_owner):
        w.registry.transfer_dataset(1, w.publisher)
    for who in (w.stranger, w.data_owner):
        with boa.env.prank(who), boa.reverts("registry: caller is not the pending owner"):
            w.registry.accept_dataset(1)


def test_transfer_dataset__by_stranger_to_self_or_cancelled__is_handled(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not the dataset owner"):
        w.registry.transfer_dataset(1, w.stranger)
    with boa.env.prank(w.data_owner):
        with boa.reverts("registry: new owner is the owner"):
            w.registry.transfer_dataset(1, w.data_owner)
        w.registry.transfer_dataset(1, w.publisher)
        w.registry.transfer_dataset(1, h.ZERO_ADDRESS)  # cancels
    with boa.env.prank(w.publisher), boa.reverts("registry: caller is not the pending owner"):
        w.registry.accept_dataset(1)
    with boa.reverts("registry: unknown dataset"):
        w.registry.transfer_dataset(99, w.publisher)


def test_resolve_dataset_dispute__by_registry_owner__reassigns_a_squatted_dataset_with_evidence(w):
    # The squatter learnt the digest first and registered it (the residual risk); the author disputes.
    squatter, author = h.funded_address("squatter"), h.funded_address("author")
    c, s = _contributors(2)
    with boa.env.prank(squatter):
        did = h.commit_and_register(w.registry, h.digest("leaked"), ZERO32, [squatter], [10_000], "")
        w.registry.transfer_dataset(did, h.funded_address("accomplice"))
    evidence = h.digest("signed-statement-of-the-author")
    with boa.env.prank(w.owner):
        w.registry.resolve_dataset_dispute(did, author, evidence)
    (dispute,) = h.events(w.registry, "DatasetDisputeResolved")
    assert (dispute.dataset_id, dispute.previous_owner, dispute.new_owner, dispute.evidence_digest) == (
        did,
        squatter,
        author,
        evidence,
    )
    (changed,) = h.events(w.registry, "DatasetOwnerChanged")
    assert (changed.previous_owner, changed.new_owner) == (squatter, author)
    assert w.registry.dataset_owner(did) == author
    assert w.registry.dataset_pending_owner(did) == h.ZERO_ADDRESS  # the squatter's transfer is cancelled
    with boa.env.prank(squatter), boa.reverts("registry: caller is not the dataset owner"):
        w.registry.update_contributors(did, c, s)
    with boa.env.prank(author):
        w.registry.update_contributors(did, c, s)
    assert w.registry.dataset_version(did) == 2


def test_resolve_dataset_dispute__by_anyone_but_the_registry_owner__fails(w):
    # The trust limit holds: only the registry owner has the dispute power.
    for who in (w.stranger, w.data_owner, w.publisher):
        with boa.env.prank(who), boa.reverts("ownable: caller is not the owner"):
            w.registry.resolve_dataset_dispute(1, who, h.digest("evidence"))
    assert w.registry.dataset_owner(1) == w.data_owner


def test_resolve_dataset_dispute__bad_input__reverts(w):
    with boa.env.prank(w.owner):
        with boa.reverts("registry: unknown dataset"):
            w.registry.resolve_dataset_dispute(99, w.stranger, h.digest("e"))
        with boa.reverts("registry: zero owner"):
            w.registry.resolve_dataset_dispute(1, h.ZERO_ADDRESS, h.digest("e"))
        with boa.reverts("registry: zero evidence digest"):
            w.registry.resolve_dataset_dispute(1, w.stranger, ZERO32)


# ------------------------------------------ revenue after an IMO (finding 7)


def test_register_model__same_weights_twice__fails(w):
    base, a1, a2 = h.digest("base"), h.digest("lora-1"), h.digest("lora-2")
    with boa.env.prank(w.publisher):
        mid = w.registry.register_model("orig", base, [a1, a2], [], [], 10, w.publisher)
    assert w.registry.model_id_of_weights(w.registry.weights_key(base, [a2, a1])) == mid
    # the publisher (or anyone) re-registers the same weights as a new model that pays itself
    for who, adapters in ((w.publisher, [a1, a2]), (w.stranger, [a2, a1])):
        with boa.env.prank(who), boa.reverts("registry: weights already registered"):
            w.registry.register_model("copy", base, adapters, [], [], 10, who)
    with boa.env.prank(w.publisher):
        with boa.reverts("registry: duplicate adapter"):
            w.registry.register_model("dup", base, [a1, a2, a1], [], [], 10, w.publisher)
        with boa.reverts("registry: zero adapter digest"):
            w.registry.register_model("zero", base, [ZERO32], [], [], 10, w.publisher)
        # other weights sets are new models
        assert w.registry.register_model("base-only", base, [], [], [], 10, w.publisher) == mid + 1
        assert w.registry.register_model("one-adapter", base, [a1], [], [], 10, w.publisher) == mid + 2
    assert w.registry.model_adapters(mid) == [a1, a2]  # stored as given


def test_weights_key__is_keccak_of_base_and_sorted_adapters(w):
    ds = sorted([h.digest(i) for i in range(5)])
    expected = keccak(encode(["bytes32", "bytes32[]"], [h.digest("b"), ds]))
    assert w.registry.weights_key(h.digest("b"), list(reversed(ds))) == expected


def test_set_model_fee__cut_after_imo_without_delay__fails(w):
    _, token = _lock(w)
    delay = w.registry.PRICING_DELAY()
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 0)
    (log,) = h.events(w.registry, "ModelFeeCutScheduled")
    eta = boa.env.timestamp + delay
    assert (log.model_id, log.fee_per_task, log.effective_at) == (1, 0, eta)
    assert not h.events(w.registry, "ModelFeeUpdated")
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)  # the cut is not in effect
    assert w.registry.pending_pricing(1) == (0, eta, 0)
    boa.env.time_travel(seconds=delay - 1)
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)
    boa.env.time_travel(seconds=1)
    assert w.registry.model_pricing(1) == (True, 0, token)  # holders had the whole delay to see it
    assert w.registry.model(1)[3] == 0
    assert w.registry.pending_pricing(1) == (0, 0, 0)


def test_set_model_active__deactivate_after_imo_without_delay__fails(w):
    _, token = _lock(w)
    delay = w.registry.PRICING_DELAY()
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, False)
        (log,) = h.events(w.registry, "ModelDeactivationScheduled")
        eta = boa.env.timestamp + delay
        assert (log.model_id, log.effective_at) == (1, eta)
        assert not h.events(w.registry, "ModelActiveSet")
        with boa.reverts("registry: deactivation already scheduled"):
            w.registry.set_model_active(1, False)
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)
    assert w.registry.pending_pricing(1) == (0, 0, eta)
    boa.env.time_travel(seconds=delay)
    assert w.registry.model_pricing(1) == (False, w.model_fee, token)
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, True)  # reopening is immediate
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)


def test_set_model_active__reopen_after_imo__cancels_a_scheduled_deactivation(w):
    _lock(w)
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, False)
        w.registry.set_model_active(1, True)
    boa.env.time_travel(seconds=w.registry.PRICING_DELAY() + 1)
    assert w.registry.model_pricing(1)[0] is True
    assert w.registry.pending_pricing(1) == (0, 0, 0)


def test_set_model_fee__raise_after_imo__is_immediate_and_cancels_a_scheduled_cut(w):
    _, token = _lock(w)
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 1)
        w.registry.set_model_fee(1, 2 * w.model_fee)
    (log,) = h.events(w.registry, "ModelFeeUpdated")
    assert log.fee_per_task == 2 * w.model_fee
    assert w.registry.model_pricing(1) == (True, 2 * w.model_fee, token)
    boa.env.time_travel(seconds=w.registry.PRICING_DELAY() + 1)
    assert w.registry.model_pricing(1) == (True, 2 * w.model_fee, token)


def test_set_model_fee__second_cut_after_imo__replaces_the_first_with_a_new_delay(w):
    _lock(w)
    delay = w.registry.PRICING_DELAY()
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 5)
        boa.env.time_travel(seconds=delay // 2)
        w.registry.set_model_fee(1, 3)
    boa.env.time_travel(seconds=delay // 2 + 1)
    assert w.registry.model_pricing(1)[1] == w.model_fee  # neither cut is in effect yet
    boa.env.time_travel(seconds=delay // 2)
    assert w.registry.model_pricing(1)[1] == 3


def test_set_model_fee__fee_cut_and_deactivation_scheduled_together__each_takes_effect_on_time(w):
    _lock(w)
    delay = w.registry.PRICING_DELAY()
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 7)
        boa.env.time_travel(seconds=100)
        w.registry.set_model_active(1, False)
    boa.env.time_travel(seconds=delay - 100)
    assert w.registry.model_pricing(1)[:2] == (True, 7)
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 8)  # a write applies the due cut first, then raises
    assert w.registry.model_pricing(1)[:2] == (True, 8)
    boa.env.time_travel(seconds=100)
    assert w.registry.model_pricing(1)[:2] == (False, 8)


def test_set_model_fee__cut_during_imo__is_delayed_too(w):
    launcher = _launcher(w)
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 0)
        w.registry.set_model_active(1, False)
    assert w.registry.model_pricing(1) == (True, w.model_fee, w.fee_receiver)


def test_set_model_fee__cut_without_imo__is_immediate(w):
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 0)
        w.registry.set_model_active(1, False)
    assert w.registry.model_pricing(1) == (False, 0, w.fee_receiver)
    assert w.registry.pending_pricing(1) == (0, 0, 0)


# ------------------------------------------------ IMOs bound to their launcher (8a, 8c)


def test_begin_imo__by_the_launcher__records_it_and_emits(w):
    launcher = _launcher(w)
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
    (log,) = h.events(w.registry, "ImoBegun")
    assert (log.model_id, log.launcher) == (1, launcher)
    assert w.registry.imo_launcher_of(1) == launcher
    assert not w.registry.fee_receiver_locked(1)


def test_begin_imo__bad_caller_or_model__reverts(w):
    launcher = _launcher(w)
    for who in (w.publisher, w.stranger, w.owner):
        with boa.env.prank(who), boa.reverts("registry: caller is not the imo launcher"):
            w.registry.begin_imo(1)
    with boa.env.prank(launcher):
        with boa.reverts("registry: unknown model"):
            w.registry.begin_imo(9)
        w.registry.begin_imo(1)
        with boa.reverts("registry: imo in progress"):
            w.registry.begin_imo(1)
    with boa.env.prank(w.publisher):
        mid = h.register_model(w.registry, w.publisher, name="closed")
        w.registry.set_model_active(mid, False)
    with boa.env.prank(launcher), boa.reverts("registry: model inactive"):
        w.registry.begin_imo(mid)


def test_begin_imo__with_a_pricing_change_still_scheduled__reverts(w):
    launcher = _launcher(w)
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 0)  # scheduled: the IMO is in progress
    with boa.env.prank(launcher):
        w.registry.end_imo(1, h.ZERO_ADDRESS)  # the sale fails
        with boa.reverts("registry: pricing change scheduled"):
            w.registry.begin_imo(1)
    boa.env.time_travel(seconds=w.registry.PRICING_DELAY())
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)  # the cut is in effect: buyers see the real fee
    assert w.registry.model_pricing(1)[1] == 0


def test_end_imo__successful_sale__locks_the_receiver_to_the_token(w):
    launcher, token = _launcher(w), boa.env.generate_address("token")
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
        w.registry.end_imo(1, token)
    (receiver_log,) = h.events(w.registry, "ModelFeeReceiverUpdated")
    (ended,) = h.events(w.registry, "ImoEnded")
    assert (receiver_log.model_id, receiver_log.fee_receiver) == (1, token)
    assert (ended.model_id, ended.launcher, ended.token) == (1, launcher, token)
    assert w.registry.fee_receiver_locked(1) and w.registry.imo_launcher_of(1) == h.ZERO_ADDRESS
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)
    with boa.env.prank(w.publisher), boa.reverts("registry: fee receiver locked by an IMO"):
        w.registry.set_fee_receiver(1, w.publisher)
    with boa.env.prank(launcher):
        with boa.reverts("registry: caller is not the model's imo launcher"):
            w.registry.end_imo(1, w.publisher)
        with boa.reverts("registry: fee receiver locked by an IMO"):
            w.registry.begin_imo(1)


def test_end_imo__failed_sale__lets_the_publisher_launch_again(w):
    launcher = _launcher(w)
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
        w.registry.end_imo(1, h.ZERO_ADDRESS)
    (ended,) = h.events(w.registry, "ImoEnded")
    assert (ended.model_id, ended.token) == (1, h.ZERO_ADDRESS)
    assert not w.registry.fee_receiver_locked(1) and w.registry.imo_launcher_of(1) == h.ZERO_ADDRESS
    assert w.registry.model_pricing(1) == (True, w.model_fee, w.fee_receiver)
    new = boa.env.generate_address()
    with boa.env.prank(w.publisher):
        w.registry.set_fee_receiver(1, new)
    second = _launcher(w, "launcher-2")
    with boa.env.prank(second):
        w.registry.begin_imo(1)
    assert w.registry.imo_launcher_of(1) == second


def test_end_imo__by_stranger_or_without_imo__fails(w):
    launcher = _launcher(w)
    with boa.env.prank(launcher), boa.reverts("registry: caller is not the model's imo launcher"):
        w.registry.end_imo(1, launcher)
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
    for who in (w.stranger, w.publisher, w.owner):
        with boa.env.prank(who), boa.reverts("registry: caller is not the model's imo launcher"):
            w.registry.end_imo(1, who)


def test_set_fee_receiver__during_imo__fails(w):
    launcher = _launcher(w)
    with boa.env.prank(launcher):
        w.registry.begin_imo(1)
    with boa.env.prank(w.publisher), boa.reverts("registry: fee receiver locked by an IMO"):
        w.registry.set_fee_receiver(1, w.publisher)


def test_end_imo__after_launcher_switch__succeeds(w):
    # 8a: the owner switches launchers during a sale; the sale can still finalize.
    first, token = _launcher(w, "launcher-1"), boa.env.generate_address("token")
    with boa.env.prank(first):
        w.registry.begin_imo(1)
    second = _launcher(w, "launcher-2")
    with boa.env.prank(second):
        with boa.reverts("registry: caller is not the model's imo launcher"):
            w.registry.end_imo(1, second)
        with boa.reverts("registry: imo in progress"):
            w.registry.begin_imo(1)
    with boa.env.prank(first):
        w.registry.end_imo(1, token)
    assert w.registry.fee_receiver_locked(1)
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)


def test_end_imo__after_launcher_disabled_and_model_closed__still_succeeds(w):
    first, token = _launcher(w), boa.env.generate_address("token")
    with boa.env.prank(first):
        w.registry.begin_imo(1)
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, False)
    boa.env.time_travel(seconds=w.registry.PRICING_DELAY())
    with boa.env.prank(w.owner):
        w.registry.set_imo_launcher(h.ZERO_ADDRESS)
    with boa.env.prank(first):
        w.registry.end_imo(1, token)
    assert w.registry.model_pricing(1) == (False, w.model_fee, token)


def test_end_imo__second_launcher_overrides_locked_receiver__fails(w):
    # 8c: after a successful IMO and a launcher switch, a second IMO through the new launcher.
    first, token = _lock(w)
    second = _launcher(w, "launcher-2")
    attacker_token = boa.env.generate_address("attacker-token")
    with boa.env.prank(second):
        with boa.reverts("registry: fee receiver locked by an IMO"):
            w.registry.begin_imo(1)
        with boa.reverts("registry: caller is not the model's imo launcher"):
            w.registry.end_imo(1, attacker_token)
    with boa.env.prank(first), boa.reverts("registry: caller is not the model's imo launcher"):
        w.registry.end_imo(1, attacker_token)
    with boa.env.prank(w.publisher), boa.reverts("registry: fee receiver locked by an IMO"):
        w.registry.set_fee_receiver(1, attacker_token)
    assert w.registry.model_pricing(1) == (True, w.model_fee, token)
