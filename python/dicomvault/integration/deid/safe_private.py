"""Private attributes kept under the Retain Safe Private Option (PS3.15 E.3.10).

Only attributes we can justify: numeric acquisition parameters that quantitative analysis needs
and that cannot carry identity (b-values and diffusion directions, PET scale factors, a reject
flag), chosen from PS3.15 Table E.3.10-1 (Exemplary Safe Private Attributes) as PixelMed's
de-identifier keeps them (not re-checked here against the table's latest revision). Everything
else private is removed, even with the option: a private text or sequence can hold anything,
and no vendor documents it.

Keys: (private creator, group, element within the creator's block).
"""

from __future__ import annotations

SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset({
    # Siemens MR diffusion: B_value, DiffusionDirectionality, DiffusionGradientDirection, B_matrix
    ("SIEMENS MR HEADER", 0x0019, 0x0C),
    ("SIEMENS MR HEADER", 0x0019, 0x0D),
    ("SIEMENS MR HEADER", 0x0019, 0x0E),
    ("SIEMENS MR HEADER", 0x0019, 0x27),
    # GE MR: b-value (slop_int_6) and the diffusion direction components
    ("GEMS_PARM_01", 0x0043, 0x39),
    ("GEMS_ACQU_01", 0x0019, 0xBB),
    ("GEMS_ACQU_01", 0x0019, 0xBC),
    ("GEMS_ACQU_01", 0x0019, 0xBD),
    # Philips MR diffusion B-factor
    ("Philips Imaging DD 001", 0x2001, 0x03),
    # Philips PET: SUV factor, activity concentration scale factor
    ("Philips PET Private Group", 0x7053, 0x00),
    ("Philips PET Private Group", 0x7053, 0x09),
    # GE PACS reject image flag
    ("GEIIS PACS", 0x0903, 0x10),
})

SAFE_CREATORS: frozenset[tuple[str, int]] = frozenset((c, g) for c, g, _ in SAFE_PRIVATE)


def is_safe(creator: str, group: int, element: int) -> bool:
    """`element` is the full element number (xxEE): its low byte is the offset in the block."""
    return (creator.strip(), group, element & 0xFF) in SAFE_PRIVATE
