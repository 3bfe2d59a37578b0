"""The adapter's exception hierarchy, in one place."""


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""


class ConfigError(AdapterError):
    """The configuration is unusable; the message names the key and the fix."""


class SlurmError(AdapterError):
    """A Slurm command failed, timed out or printed something we cannot read."""


class DeliveryError(AdapterError):
    """A job could not be handed to a sink."""


class BackendUnavailable(DeliveryError):
    """cc-backend or NATS did not answer; try again later."""


class BackendRejected(DeliveryError):
    """cc-backend answered, and the answer says the request itself is wrong."""
