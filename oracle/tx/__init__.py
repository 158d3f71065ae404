"""The oracle's transaction manager in parts, after the Chainlink node's txmgr.

- policy.py: when to bump, by how much, how long to wait (TxPolicy);
- fees.py: the fees of a new attempt, from the market and the previous attempt (pure);
- store.py: the transactions, their signed attempts and the per-key nonce counter, in the database;
- broadcaster.py: signs, records and sends; reads the node's refusals (known, nonce too low,
  underpriced); re-signs with a fresh nonce when another sender took ours;
- confirmer.py: receipts, stuck detection, reorged-out transactions, revert reasons.

oracle/txmanager.py puts them together behind one `TxManager` per key.
"""

import logging

# One logger for all the parts: operators (and tests) follow the manager by this name.
log = logging.getLogger("tributa.oracle.txmanager")
