"""Platform bounds shared by the settings (checked at start-up) and the models (checked on
every write). Plain constants: the settings module imports this before any app is loaded."""

# Console ticket lifetimes (a pool's ticket_ttl_s, the platform's VDI_TICKET_TTL_S): long
# enough to open a client, short enough that a leaked password is soon worthless.
TICKET_TTL_MIN_S = 10
TICKET_TTL_MAX_S = 600
