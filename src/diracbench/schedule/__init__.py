"""Degradation schedules: how the blur std / mask std moves with severity t (rule `schedule`).

`greedy` holds the paper's greedy scheduler (Algorithm 2), `distances` the image distances it
uses (LPIPS, MSE, RMSE), `official` the official blur table, and `python -m diracbench.schedule`
writes `schedule.csv` (t, value), `iterations.csv` and the Fig. 7 plot for one dataset and task.
"""
