"""IMO and model-token gas from real Anvil receipts: launch, buy, transfer, revenue in, claim.

Revenue-in is a plain ETH transfer to the token (what TaskEscrow.withdraw_for does); it is
measured with 1 holder and again after the tokens are spread over 1,000 holders.
"""

from __future__ import annotations

import os
from pathlib import Path

from web3 import Web3

from bench.chain import deployed_chain, median, register_model
from tributa import imo

HOLDERS = 1000


def run(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    with deployed_chain(workdir) as (_node, contracts, s):
        publisher, buyer, buyer2 = s["publisher"], s["buyer"], s["buyer2"]
        launches, buys = [], []
        for _ in range(3):
            model = register_model(contracts, publisher)
            imo_id, token, tx = imo.launch(
                contracts,
                publisher,
                model,
                "Bench Model",
                "BNCH",
                supply_tokens=1_000_000,
                price_wei=10**12,
                soft_cap_wei=10**17,
                hard_cap_wei=8 * 10**17,
                duration_s=3600,
                publisher_share_bps=2000,
                vesting_s=86_400,
            )
            launches.append(tx.gas_used)
        # The last IMO: several buys by a new buyer, the sale sold out to one holder.
        for value in (10**17, 10**17):
            buys.append(imo.buy(contracts, buyer, imo_id, value)[1].gas_used)
        imo.buy(contracts, buyer, imo_id, 6 * 10**17)
        imo.finalize(contracts, buyer, imo_id)
        imo.claim(contracts, buyer, imo_id)
        t = imo.token_contract(contracts, token)

        revenue_in_1 = s["requester"].send_value(token, 10**15).gas_used
        # A transfer with revenue accrued on both sides (buyer2 holds some when revenue arrives).
        buyer.transact(t.functions.transfer(buyer2.address, 10**21))
        s["requester"].send_value(token, 10**15)
        transfer = buyer.transact(t.functions.transfer(buyer2.address, 10**21)).gas_used
        claim = buyer.transact(t.functions.claim()).gas_used

        for _ in range(HOLDERS - 2):
            buyer.transact(t.functions.transfer(Web3.to_checksum_address("0x" + os.urandom(20).hex()), 10**18))
        revenue_in_1000 = median([s["requester"].send_value(token, 10**15).gas_used for _ in range(3)])
    return {
        "gas_imo_launch": median(launches),
        "gas_imo_buy": median(buys),
        "gas_token_transfer": float(transfer),
        "gas_revenue_claim": float(claim),
        "gas_revenue_in": float(revenue_in_1),
        "gas_revenue_in_holders_1000": revenue_in_1000,
    }
