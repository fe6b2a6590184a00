from tenants.taskutils import platform_task

from .usage import usage_aggregate


@platform_task("tenants.usage_aggregate")
def usage_aggregate_task(**_kwargs) -> int:
    return usage_aggregate()
