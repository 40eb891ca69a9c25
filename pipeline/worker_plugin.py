"""What every Dask worker process of a run sets up when it joins (``Client.register_plugin``)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from mirpipe import stop


class WorkerStopPlugin(WorkerPlugin):
    """Installs ``mirpipe.stop``'s SIGTERM handler in the worker process (its main thread, where the
    worker's event loop runs), so a walltime or pre-emption signal makes training save and stop
    rather than die mid-step."""

    name = "mirpipe-stop"

    def setup(self, worker) -> None:
        stop.install_sigterm_handler()
