"""llama.cpp's own OpenAI-compatible server (through xllamacpp), for the adapter tests.

    python llama_server.py MODEL.gguf PORT

Serves on 127.0.0.1:PORT, prints its address once it listens, and stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys

from autonomic.models._llamacpp import extra_buffers_allowed, xllamacpp


def main(model: str, port: int) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = 2048
    params.n_parallel = 1
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.verbosity = -1
    params.no_extra_bufts = not extra_buffers_allowed()  # as the embedded model: no AMX unproved
    server = xllamacpp.Server(params)
    print(server.listening_address, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    del server


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
