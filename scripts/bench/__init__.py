"""The benchmark harness (`make bench`): each section measures one stage beside its ceiling or peer."""
