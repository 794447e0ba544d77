"""Attention steering on the shared UNet: prompt-to-prompt edits and Attend-and-Excite.

Both methods read or rewrite the UNet's attention maps through custom attention processors
(`processors.steered`), installed for one call and always restored, so every other tab keeps
using the shared UNet exactly as before.
"""
