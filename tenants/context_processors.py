from hypervisors.selectors import simulated_hosts_in_use

from .scoping import current_tenant
from .selectors import tenant_list_for_user


def tenancy(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_tenant": current_tenant(),
        "user_tenants": tenant_list_for_user(user=user),
        "simulated_hosts": simulated_hosts_in_use(),
    }
