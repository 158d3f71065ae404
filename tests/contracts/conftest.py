"""Fixtures for the Tributa core contracts (TaskEscrow, DataRegistry, RoyaltyVault).

One world is deployed per test module (on first use of `w`); every test using
`w` runs inside a boa anchor, so state changes are rolled back between tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import boa
import pytest

from tests.contracts import helpers as h


@dataclass
class World:
    sys: h.System
    publisher: str
    fee_receiver: str
    model_id: int
    model_fee: int
    data_owner: str
    dataset_small: tuple  # (id, contributors, shares): 3 contributors
    dataset_ten: tuple  # 10 contributors
    agents: list  # registered eth_account LocalAccounts
    outsider: object  # unregistered LocalAccount
    requester: str
    stranger: str

    # shortcuts
    @property
    def escrow(self):
        return self.sys.escrow

    @property
    def registry(self):
        return self.sys.registry

    @property
    def vault(self):
        return self.sys.vault

    @property
    def owner(self):
        return self.sys.owner

    @property
    def oracle(self):
        return self.sys.oracle

    @property
    def treasury(self):
        return self.sys.treasury


@pytest.fixture(scope="module")
def world() -> World:
    s = h.deploy_system()
    publisher = h.funded_address("publisher")
    fee_receiver = boa.env.generate_address("fee_receiver")
    data_owner = h.funded_address("data_owner")
    small = h.register_dataset(s.registry, data_owner, 3, label="small")
    ten = h.register_dataset(s.registry, data_owner, 10, label="ten")
    model_fee = 10**15
    model_id = h.register_model(
        s.registry,
        publisher,
        fee=model_fee,
        receiver=fee_receiver,
        dataset_ids=[small[0], ten[0]],
        weights=[4000, 6000],
    )
    agents = [h.new_account() for _ in range(3)]
    for a in agents:
        h.register_agent(s.escrow, a)
    return World(
        sys=s,
        publisher=publisher,
        fee_receiver=fee_receiver,
        model_id=model_id,
        model_fee=model_fee,
        data_owner=data_owner,
        dataset_small=small,
        dataset_ten=ten,
        agents=agents,
        outsider=h.new_account(),
        requester=h.funded_address("requester"),
        stranger=h.funded_address("stranger"),
    )


@pytest.fixture
def w(world) -> World:
    """The module's world; the test's changes are rolled back afterwards.

    (Deliberately not autouse: other test modules in this folder, e.g. the
    ModelToken / IMO ones, do not pay for deploying it.)
    """
    with boa.env.anchor():
        yield world
