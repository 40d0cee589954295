"""Safety and provenance: input and output moderation (word lists, an NSFW image
classifier) and C2PA signing of every output image."""

from .images import thumbnail
from .moderation import CATEGORIES, IMAGE_CATEGORIES, Assessment, Moderation, Moderator
from .provenance import Credentials, Ingredient, Signer, load_credentials, sniff_mime, verify

__all__ = ["CATEGORIES", "IMAGE_CATEGORIES", "Assessment", "Credentials", "Ingredient", "Moderation", "Moderator",
           "Signer", "load_credentials", "sniff_mime", "thumbnail", "verify"]
