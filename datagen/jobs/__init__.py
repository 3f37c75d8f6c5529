"""Jobs: stored generate / export / dedup commands that `datagen worker` processes claim and run."""
