"""Profilers: each measures one thing and returns flat metrics (or table rows). Imports nothing from
the rest of lvmbench.

| module            | measures                                                | keys                       |
|-------------------|---------------------------------------------------------|----------------------------|
| `params`          | parameter counts, model bytes                           | `params/*`, `model/*`      |
| `flops`           | forward MACs/FLOPs, training-step FLOPs per input size  | `flops/*`, `flops` table   |
| `latency`         | forward latency/throughput per size x batch x precision | `latency/*`, `latency` table |
| `memory`          | peak RSS / GPU memory per region                        | `mem/*`                    |
| `step_timer`      | per-epoch time, data wait, MFU                          | `time/*`                   |
| `fingerprint`     | environment that shapes the numbers                     | `env/*`                    |
| `device_lock`     | exclusive window on a shared device                     | (latency rows' `exclusive`) |
| `metric_registry` | every key's type, unit and meaning, declared by the module that produces it | |
| `profile_config`  | the `profilers:` section of a sweep file                |                            |
"""
