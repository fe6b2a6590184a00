from hypervisors.selectors import simulated_hosts_in_use

from tenants.scoping import current_tenant
from tenants.selectors import tenant_list_for_user


def tenancy(request):
    """The organisation being viewed, the user's organisations (the switcher) and whether
    the banner must say that hosts are simulated (on every page, the login page too)."""
    context = {"simulated_hosts": simulated_hosts_in_use()}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        context.update(current_tenant=current_tenant(),
                       user_tenants=tenant_list_for_user(user=user))
    return context
