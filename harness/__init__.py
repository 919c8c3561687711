"""What the tests and the benchmarks share: real services on loopback, worker processes, fake
Google APIs, the apps that subprocess workers load. Not shipped (pyproject's package list
names the product's packages only); imports neither tests nor bench."""
