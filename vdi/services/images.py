"""Golden images: saved, deleted, published to their pools."""

from __future__ import annotations

import logging


from tenants.audit import audited
from tenants.scoping import scopes_disabled

from core.errors import Conflict
from ..models import Desktop, Image, Pool
from .operations import pool_autoscale_enqueue

logger = logging.getLogger(__name__)


# --- images ---------------------------------------------------------------------------------
def _image_audited(image: Image, verb: str, **details):
    """Images are the platform's: a public one's entries have no tenant, a private one's go
    into its tenant's trail."""
    return audited(action=f"image.{verb}", tenant=image.tenant, target=image,
                   details={"name": image.name, "version": image.version, **details})


def image_save(*, image: Image) -> Image:
    """Validate (Model.clean and constraints, across tenants) and save a golden image."""
    with _image_audited(image, "create" if image._state.adding else "update"), \
            scopes_disabled():
        image.full_clean()
        image.save()
    return image


def image_delete(*, image: Image) -> None:
    """Delete a golden image no pool or desktop uses any more (409 otherwise). Its base
    volumes stay on the hosts: removing them is the operator's call."""
    with _image_audited(image, "delete"), scopes_disabled():
        pools = Pool.objects.filter(image=image).count()
        desktops = Desktop.objects.filter(image=image).count()
        if pools or desktops:
            raise Conflict(
                f"Image {image.name} v{image.version} is still used by {pools} pool(s) and "
                f"{desktops} desktop(s); publish a newer version and let them move first.",
                code="image_in_use", details={"pools": pools, "desktops": desktops},
            )
        image.delete()


def image_publish(*, image: Image) -> list[Pool]:
    """Roll every pool on an older version of this image (same name, same owner) onto it.

    New desktops use it at once; the autoscaler recycles idle floating desktops onto it in
    the background; dedicated desktops keep theirs until they are reset.
    """
    with _image_audited(image, "publish") as audit, scopes_disabled():
        pools = list(Pool.objects.filter(
            image__name=image.name, image__tenant=image.tenant_id,
            image__version__lt=image.version, deleting_since__isnull=True,
        ))
        for pool in pools:
            Pool.objects.filter(pk=pool.pk).update(image=image)
            pool_autoscale_enqueue(pool)
        audit.details["pools"] = [str(pool.id) for pool in pools]
    logger.info("image %s v%d published: %d pool(s) rolling onto it", image.name,
                image.version, len(pools))
    return pools


