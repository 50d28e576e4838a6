"""The real parts that tests, benchmarks and tools run the daemon against, instead of mocks: real face
photographs (facesdata: scikit-image's astronaut), the daemon as a subprocess and a live MJPEG stream
(daemonproc), a Mosquitto broker on a free localhost port (mosquitto). Not installed with the package:
imported from the repository root (`python -m pytest`, `python -m benchmarks.NAME`)."""
