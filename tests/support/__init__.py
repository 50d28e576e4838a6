"""Helpers the tests share: generated faces (fakefaces), the tiny int8 model (tinymodel), fuzz inputs, a slow
TCP link, throwaway TLS certificates, FER+'s vote columns (ferplus), and the benchmark scripts as tests run them
(benchscripts)."""
