"""How the API authenticates ``Authorization: Token <key>`` (REST_FRAMEWORK settings).

A module of its own, importing no view: DRF imports the authentication classes while it
defines its own views.
"""

from knox import auth

from tenants.tokens import api_token_touch


class TokenAuthentication(auth.TokenAuthentication):
    """knox's token authentication (hashed, expiring tokens), noting when each token was
    last used."""

    def validate_user(self, auth_token):
        user, auth_token = super().validate_user(auth_token)
        api_token_touch(token=auth_token)
        return user, auth_token
