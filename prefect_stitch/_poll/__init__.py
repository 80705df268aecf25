"""One poll per Stitch account: the process's poller, and its sharing across processes.

The rest of the package imports only from here:

* [`poller_for`][prefect_stitch._poll.poller.poller_for] and
  [`pollers_of`][prefect_stitch._poll.poller.pollers_of]: the process's poller of an account;
* [`AccountPoller`][prefect_stitch._poll.poller.AccountPoller] and its
  [`Watch`][prefect_stitch._poll.poller.Watch], which hands a waiter each
  [`Snapshot`][prefect_stitch._poll.snapshot.Snapshot];
* [`sharing_enabled`][prefect_stitch._poll.sharing.sharing_enabled]: whether processes share
  one poll per account.

Inside: `poller` (the thread and its loop), `sharing` (the cross-process protocol, put
together from its roles: `election`, `demand`, `publication`, `following`; its timers in
`schedule`), `store` (what the protocol needs of the Prefect API; `prefect_store`, and
`memory` for tests), `listing` (what a leader publishes) and `snapshot`.
"""

from prefect_stitch._poll.poller import AccountPoller, Watch, poller_for, pollers_of
from prefect_stitch._poll.sharing import sharing_enabled
from prefect_stitch._poll.snapshot import Snapshot

__all__ = ["AccountPoller", "Snapshot", "Watch", "poller_for", "pollers_of", "sharing_enabled"]
