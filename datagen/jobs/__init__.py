"""Jobs: stored generate / export / dedup commands that `datagen worker` processes claim and run,
and the cron schedules that `datagen scheduler` fires into the queue."""
