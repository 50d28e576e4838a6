"""The test suite, by stage: edge/ (the daemon, capture to publish), train/, convert/, deploy/ (systemd unit,
install script, Pi image check), benchmarks/ (the benchmark scripts run short); support/ holds the helpers
several of them share. Fixtures are in conftest.py; the real parts they run against are in testbed/."""
