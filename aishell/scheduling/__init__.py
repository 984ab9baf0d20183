"""Unattended runs: `aishell schedule serve` over APScheduler (serve) and its lock on the
state store (leadership), cron schedules (crontab), telling someone how a run ended
(notify) and Prometheus metrics. Sits beside the executor: may import it and everything
below, never commands or above."""
