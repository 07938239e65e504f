"""The consent service's view of identity lives in the domain package
(services/consent/domain/directory.py); services/consent/main.py imports it from here."""

from services.consent.domain.directory import DeviceKey, Directory

__all__ = ["DeviceKey", "Directory"]
