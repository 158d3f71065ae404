"""DataRegistry: datasets, contributors roots, models, pricing, access control."""

import boa
import pytest

from tests.contracts import helpers as h
from tributa.merkle import contributors_proof, contributors_root, sort_contributors

ZERO32 = b"\x00" * 32


def _contributors(n, shares=None):
    addrs = [boa.env.generate_address() for _ in range(n)]
    if shares is None:
        shares = [h.BPS // n] * n
        shares[-1] += h.BPS - sum(shares)
    return sort_contributors(zip(addrs, shares))


# ---------------------------------------------------------------- datasets


def test_register_dataset__valid_input__stores_dataset_root_and_emits_events(w):
    c, s = _contributors(4)
    with boa.env.prank(w.stranger):
        did = w.registry.register_dataset(h.digest("c"), h.digest("m"), c, s, "terms")
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
    assert (reg.dataset_id, reg.owner, reg.content_digest, reg.metadata_digest, reg.terms) == (3, w.stranger, h.digest("c"), h.digest("m"), "terms")
    assert type(cs).__name__ == "ContributorsSet"
    assert (cs.dataset_id, cs.version, cs.contributors_root) == (3, 1, root)
    assert [str(a) for a in cs.contributors] == c and list(cs.shares_bps) == s


def test_register_dataset__single_contributor__root_is_the_leaf(w):
    c, s = _contributors(1)
    did = w.registry.register_dataset(h.digest("one"), ZERO32, c, s, "")
    assert w.registry.contributors_root(did, 1) == w.registry.contributors_leaf(c[0], 10_000)
    assert w.registry.verify_share(did, 1, c[0], 10_000, [])


def test_register_dataset__ids_start_at_one(w):
    assert w.registry.dataset(1)[4] == 1  # version of dataset 1
    assert w.registry.dataset(0) == (ZERO32, ZERO32, h.ZERO_ADDRESS, ZERO32, 0, 0, "", False)


def test_register_dataset__zero_content_digest__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: zero content digest"):
        w.registry.register_dataset(ZERO32, ZERO32, c, s, "")


def test_register_dataset__digest_already_registered__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: dataset already registered"):
        w.registry.register_dataset(h.digest("content-small"), ZERO32, c, s, "")


def test_register_dataset__no_contributors__reverts(w):
    with boa.reverts("registry: no contributors"):
        w.registry.register_dataset(h.digest("x"), ZERO32, [], [], "")


def test_register_dataset__length_mismatch__reverts(w):
    c, s = _contributors(3)
    with boa.reverts("registry: length mismatch"):
        w.registry.register_dataset(h.digest("x"), ZERO32, c, s[:2], "")


def test_register_dataset__more_than_1000_contributors__is_rejected(w):
    c = [boa.env.generate_address() for _ in range(1001)]
    with pytest.raises(Exception):  # rejected by the ABI bound of DynArray[address, 1000]
        w.registry.register_dataset(h.digest("x"), ZERO32, c, [1] * 1001, "")
    assert w.registry.MAX_CONTRIBUTORS() == 1000


def test_register_dataset__zero_address__reverts(w):
    c, s = _contributors(2)
    with boa.reverts("registry: zero address contributor"):
        w.registry.register_dataset(h.digest("x"), ZERO32, [h.ZERO_ADDRESS] + c[1:], s, "")


def test_register_dataset__unsorted_contributors__reverts(w):
    c, s = _contributors(3)
    with boa.reverts("registry: contributors not strictly ascending"):
        w.registry.register_dataset(h.digest("x"), ZERO32, list(reversed(c)), s, "")


def test_register_dataset__duplicate_contributor__reverts(w):
    c, _ = _contributors(2)
    with boa.reverts("registry: contributors not strictly ascending"):
        w.registry.register_dataset(h.digest("x"), ZERO32, [c[0], c[0]], [5000, 5000], "")


def test_register_dataset__zero_share__reverts(w):
    c, _ = _contributors(3)
    with boa.reverts("registry: zero share"):
        w.registry.register_dataset(h.digest("x"), ZERO32, c, [5000, 0, 5000], "")


@pytest.mark.parametrize("shares", [[5000, 4999], [5000, 5001]])
def test_register_dataset__shares_not_summing_to_10000__reverts(w, shares):
    c, _ = _contributors(2)
    with boa.reverts("registry: shares must sum to 10000"):
        w.registry.register_dataset(h.digest("x"), ZERO32, c, shares, "")


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
    c, s = _contributors(2)
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
        mid = w.registry.register_model("m2", h.digest("w2"), [h.digest("a1"), h.digest("a2")], [2], [10_000], 123, w.fee_receiver)
    (log,) = h.events(w.registry, "ModelRegistered")
    assert mid == 2 and w.registry.model_count() == 2
    assert (log.model_id, log.publisher, log.name, log.weights_digest, log.fee_per_task, log.fee_receiver) == (
        2, w.stranger, "m2", h.digest("w2"), 123, w.fee_receiver
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
        w.registry.register_model(args["name"], args["weights"], [], args["ids"], args["bps"], args["fee"], args["receiver"])


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


def test_set_fee_receiver__by_publisher__updates_receiver(w):
    new = boa.env.generate_address()
    with boa.env.prank(w.publisher):
        w.registry.set_fee_receiver(1, new)
    (log,) = h.events(w.registry, "ModelFeeReceiverUpdated")
    assert (log.model_id, log.fee_receiver) == (1, new)
    assert w.registry.model_pricing(1) == (True, w.model_fee, new)


def test_set_fee_receiver__by_imo_launcher__updates_receiver(w):
    launcher, token = boa.env.generate_address(), boa.env.generate_address()
    with boa.env.prank(w.owner):
        w.registry.set_imo_launcher(launcher)
    (log,) = h.events(w.registry, "ImoLauncherSet")
    assert log.launcher == launcher and w.registry.imo_launcher() == launcher
    with boa.env.prank(launcher):
        w.registry.set_fee_receiver(1, token)
    assert w.registry.model(1)[2] == token


def test_set_fee_receiver__after_imo_set_it__publisher_cannot_take_fees_back(w):
    launcher, token = boa.env.generate_address(), boa.env.generate_address()
    with boa.env.prank(w.owner):
        w.registry.set_imo_launcher(launcher)
    with boa.env.prank(launcher):
        w.registry.set_fee_receiver(1, token)
    assert w.registry.fee_receiver_locked(1)

    with boa.env.prank(w.publisher), boa.reverts("registry: fee receiver locked by an IMO"):
        w.registry.set_fee_receiver(1, w.publisher)
    assert w.registry.model(1)[2] == token


def test_set_fee_receiver__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("registry: caller is not publisher or launcher"):
        w.registry.set_fee_receiver(1, w.stranger)


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
