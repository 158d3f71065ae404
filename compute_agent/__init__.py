"""The Tributa compute agent: stakes, polls for jobs, runs models, returns signed results."""
