"""Jobs: the queue, workers, cron schedules and the scheduler."""
