"""Research rather than benchmarks: broker crash windows, the chaos soak, the model over several fleets."""
