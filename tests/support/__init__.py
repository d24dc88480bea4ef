"""What the tests share, one job per module (no tests here, and no fixtures: those stay
in ``tests/conftest.py``).

* ``profiles``: hypothesis profiles and :func:`~tests.support.profiles.examples`;
* ``strategies``: hypothesis strategies for runner.v1 answers (the fuzz tests);
* ``rawhttp``: a raw loopback HTTP/1.1 server whose handler writes whatever bytes it likes;
* ``fake_forgejo``: a runner.v1 server with scripted FetchTask/report answers;
* ``config``: the one TOML encoder and the one config writer;
* ``sim``: the simulator running on loopback, and a plain-httpx RPC caller for it;
* ``harness``: the service from a config file, and "simulator + real service" (with a
  crash mode, for restarts over the same state directory);
* ``noloss``: the one no-loss assertion over the simulator's ledger;
* ``polling``: waiting for a condition on the run's clock;
* ``metrics``: reading one of the service's metrics;
* ``pickup``: pickup latency of a healthy connection beside misbehaving ones;
* ``logs``: log lines captured by pytest, by level and prefix;
* ``daemon``: ``forgejo-scheduler run`` as a real child process (signals, kill -9);
* ``repos``: git repositories of actions served over loopback HTTP.
"""
