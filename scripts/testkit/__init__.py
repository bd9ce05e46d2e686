"""What the tests and the benchmark share: read a topic to its end, a service as a child process whose log shows in
its failures, one metrics scrape, one reading builder (scripts/testkit/README.md)."""
