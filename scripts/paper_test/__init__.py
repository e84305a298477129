"""The paper test profile machinery: the local server and its files, the profile generator, run.sh."""
