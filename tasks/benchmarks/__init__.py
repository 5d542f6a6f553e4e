"""The benchmarks: one module per task (its data source, prompt and scoring), each registered with `tasks.TASKS` by
`@register_task`; `tasks.base.TASKS` finds them by importing this package's modules, and only these, on first use."""
