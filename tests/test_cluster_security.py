"""Secure defaults: a dask-jobqueue cluster speaks TLS with temporary credentials and refuses a client
without them; the LocalCluster and every dashboard listen on 127.0.0.1 unless cluster.yaml says otherwise.
No batch job is submitted here (adaptive 0..1 jobs with nothing to do), so no SLURM is needed."""

from __future__ import annotations

import stat

import pytest

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster

pytest.importorskip("dask_jobqueue")
pytest.importorskip("cryptography")


def _http_hosts(cluster) -> set[str]:
    """The addresses the scheduler's dashboard (tornado HTTP server) listens on."""
    server = cluster.scheduler.http_server
    return {sock.getsockname()[0] for sock in server._sockets.values()}


def _refused(address: str, security=None) -> bool:
    """Whether the scheduler at `address` refuses one RPC (`identity`) from a client holding `security`.

    Spoken at the comm level in a fresh event loop rather than through `distributed.Client`: a Client
    starts its own IO-loop thread and gives up with a bare AssertionError when that thread takes over
    10 s to start on a loaded machine, which is not a refusal (CI saw exactly that once)."""
    import asyncio

    from distributed.comm import connect

    connection_args = security.get_connection_args("client") if security is not None else {}

    async def one_rpc() -> None:
        comm = await connect(address, timeout=5, **connection_args)
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await asyncio.wait_for(comm.read(), 5)
            assert reply.get("type") == "Scheduler", reply
        finally:
            await comm.close()

    try:
        asyncio.run(one_rpc())
    except (OSError, TimeoutError, ValueError, TypeError):
        return True
    return False


def test_jobqueue_scheduler_uses_tls_and_refuses_clients_without_its_credentials(tmp_path):
    from distributed.security import Security

    cfg = parse_cluster({"type": "slurm", "cores": 1, "memory": "1GiB", "walltime": "00:10:00", "minimum": 0, "maximum": 1})
    with open_executor(cfg, tmp_path) as ex:
        address = ex.client.scheduler.address
        assert address.startswith("tls://")
        assert ex.client.scheduler_info()["address"] == address  # our own client (with the credentials) is in
        # the worker's copy of the credentials: in <workdir>/.mirpipe-tls, readable by the owner only
        tls_dir = tmp_path / ".mirpipe-tls"
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        files = sorted(p.name.split(".")[3] for p in tls_dir.iterdir())
        assert files == ["ca_file", "cert", "key"]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tls_dir.iterdir())
        assert str(tls_dir) in ex.client.cluster.job_script() and "--tls-key" in ex.client.cluster.job_script()
        # the dashboard listens on this host only
        assert _http_hosts(ex.client.cluster) == {"127.0.0.1"}
        assert ex.dashboard_link.startswith("http://127.0.0.1:")  # as bound, not the scheduler's host
        # no credentials: plain TCP to the TLS port, TLS without a certificate, TLS with someone else's CA
        host_port = address.split("://", 1)[1]
        assert _refused(f"tcp://{host_port}")
        assert _refused(address)
        assert _refused(address, security=Security.temporary())
        assert not _refused(address, security=ex.client.security)  # the helper can tell: the run's own credentials get in
    assert list(tls_dir.iterdir()) == []  # the run's credentials are gone with it


def test_jobqueue_tls_can_be_turned_off_and_the_dashboard_opened(tmp_path):
    cfg = parse_cluster(
        {
            "type": "slurm",
            "cores": 1,
            "memory": "1GiB",
            "walltime": "00:10:00",
            "maximum": 1,
            "tls": False,
            "dashboard_address": ":0",
        }
    )
    with open_executor(cfg, tmp_path) as ex:
        assert ex.client.scheduler.address.startswith("tcp://")
        assert "--tls" not in ex.client.cluster.job_script()
        assert _http_hosts(ex.client.cluster) <= {"0.0.0.0", "::"}
    assert not (tmp_path / ".mirpipe-tls").exists()


def test_local_cluster_is_tls_on_localhost_by_default_and_refuses_a_plain_client():
    """Any local user can reach 127.0.0.1: the default LocalCluster refuses a client without this run's
    credentials (plain TCP, or TLS with other credentials); ``tls: false`` is plain TCP."""
    from distributed.security import Security

    base = {"type": "local", "n_workers": 1, "memory_limit": "1GiB"}
    with open_executor(parse_cluster(base)) as ex:
        address = ex.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:") and "TLS" in ex.description
        assert _http_hosts(ex.client.cluster) == {"127.0.0.1"}
        assert all(addr.startswith("tls://127.0.0.1:") for addr in ex.client.scheduler_info()["workers"])
        assert ex.client.submit(sum, [1, 2]).result() == 3
        assert _refused(address) and _refused("tcp://" + address.split("://", 1)[1])
        assert _refused(address, security=Security.temporary())  # someone else's credentials
        assert not _refused(address, security=ex.client.security)
    with open_executor(parse_cluster({**base, "tls": False, "dashboard_address": None})) as ex:
        address = ex.client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:") and ex.dashboard_link is None
        assert not _refused(address)  # what tls: false means: anyone on this machine gets in
