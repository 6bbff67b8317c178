"""The buffer registry: the single source of truth for per-run scratch memory.

Every component that needs scratch memory inside a run (the loop's state,
a Runge-Kutta step's stages, a controller's error history) registers named
buffers here under its own ``owner`` object. Parents adopt children with
:meth:`BufferRegistry.register_child`, which rolls the child's shared and
persistent totals into the parent's. The batch kernel then asks the
registry, never a settings object, how much memory one run needs.

Locations
---------
``"shared"``
    A slice of the run's part of the block's dynamic shared memory (cuda).
``"local"`` with ``persistent=True``
    A slice of the run's persistent local pool, allocated once by the
    kernel and kept for the whole run (e.g. error history across steps).
``"local"`` with ``persistent=False``
    A fresh per-call local array inside the owner's device function
    (``cuda.local.array``); its contents do not survive between calls.

Where a target's layout policy says so (``Target.local_in_persistent``, the
``cpu`` target) every location is a slice of one scratch array: the kernel
hands the loop a ``shared`` slice and a ``persistent`` slice, and
non-persistent local buffers are laid out after the persistent ones
(allocating inside a hot device function would cost a heap allocation per
call).

All sizes and offsets here are in ELEMENTS of the run's precision, per run;
allocators scale them by the target's lanes (runs advanced together, see
:mod:`cubie_kernel.targets`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import attrs
import numpy as np

from cubie_kernel import targets

LOCATIONS = ("shared", "local")
LOCATION_SUFFIX = "_location"


def _check_location(location: str, what: str) -> str:
    if location not in LOCATIONS:
        raise ValueError(
            f"{what} must be one of {', '.join(repr(x) for x in LOCATIONS)}, got {location!r}"
        )
    return location


@attrs.frozen
class Buffer:
    """One registered buffer (sizes in elements)."""

    name: str
    size: int
    location: str
    persistent: bool = False
    aliases: str | None = None


@attrs.frozen
class Slot:
    """Where a buffer lives in a run's memory: a region and an offset."""

    region: str  # "shared", "persistent" or "local" (a fresh local array)
    offset: int
    size: int


class BufferRegistry:
    """Registry of per-run buffers, keyed by owner object.

    Owners are compared by identity. Registries are independent instances:
    two solver stacks with two registries never see each other's buffers.
    The process default instance is :data:`cubie_kernel.buffer_registry`.
    """

    def __init__(self) -> None:
        self._owners: dict[int, Any] = {}
        self._buffers: dict[int, dict[str, Buffer]] = {}
        self._children: dict[int, dict[str, Any]] = {}
        self._location_overrides: dict[int, dict[str, str]] = {}
        #: Incremented by every change, anywhere in the registry.
        self.generation = 0
        self._stamps: dict[int, int] = {}  # owner key -> generation of its last change

    # ------------------------------------------------------------------ writing
    def _key(self, owner) -> int:
        key = id(owner)
        self._owners.setdefault(key, owner)
        self._buffers.setdefault(key, {})
        self._children.setdefault(key, {})
        self._location_overrides.setdefault(key, {})
        return key

    def register(
        self,
        name: str,
        owner,
        size: int,
        location: str = "local",
        persistent: bool = False,
        aliases: str | None = None,
    ) -> None:
        """Register (or re-register with a new size) a buffer of ``owner``.

        Parameters
        ----------
        name
            Buffer name, unique per owner; its location key is
            ``f"{name}_location"``.
        owner
            The component that uses the buffer (compared by identity).
        size
            Number of elements (>= 0).
        location
            ``"local"`` or ``"shared"``. A location set earlier through
            :meth:`update` wins over this default on re-registration.
        persistent
            For local buffers: keep contents for the whole run.
        aliases
            Name of another buffer of the same owner whose storage this one
            reuses; the two must never hold live data at the same time. An
            alias of a shared or persistent buffer costs no memory. An alias
            of a non-persistent local buffer is its own local array (local
            arrays cannot be shared between allocator calls).
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"buffer name must be an identifier, got {name!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"buffer {name!r}: size must be an int >= 0, got {size!r}")
        _check_location(location, f"buffer {name!r}: location")
        key = self._key(owner)
        if name in self._children[key]:
            raise ValueError(f"buffer {name!r} clashes with a child of the same name")
        if aliases is not None:
            target = self._buffers[key].get(aliases)
            if target is None:
                raise ValueError(
                    f"buffer {name!r} aliases {aliases!r}, which is not registered for this owner"
                )
            if target.aliases is not None:
                raise ValueError(f"buffer {name!r} aliases {aliases!r}, which is itself an alias")
            if int(size) > target.size:
                raise ValueError(
                    f"buffer {name!r} ({size} elements) cannot alias {aliases!r} "
                    f"({target.size} elements): an alias must fit in its target"
                )
        location = self._location_overrides[key].get(name, location)
        buffer = Buffer(name, int(size), location, bool(persistent), aliases)
        if self._buffers[key].get(name) != buffer:
            self._buffers[key][name] = buffer
            self._touch(key)

    def register_child(self, parent, child, name: str) -> None:
        """Adopt ``child`` under ``parent`` as ``name``.

        The child's shared and persistent totals roll up into the parent's,
        and :meth:`get_child_allocators` hands the child its slices.
        """
        if parent is child:
            raise ValueError("an owner cannot be its own child")
        key = self._key(parent)
        self._key(child)
        if name in self._buffers[key]:
            raise ValueError(f"child {name!r} clashes with a buffer of the same name")
        if self._is_ancestor(child, parent):
            raise ValueError(f"registering child {name!r} would create a cycle")
        self._children[key][name] = child
        self._touch(key)

    def replace_child(self, parent, name: str, child) -> None:
        """Swap the child registered as ``name`` under ``parent`` for ``child``."""
        key = self._key(parent)
        if name not in self._children[key]:
            raise KeyError(f"{name!r} is not a registered child of this parent")
        self._key(child)
        self._children[key][name] = child
        self._touch(key)

    def _touch(self, key: int) -> None:
        self.generation += 1
        self._stamps[key] = self.generation

    def version(self, owner) -> tuple:
        """A value that changes exactly when ``owner``'s subtree changes.

        Factories compare it to know when a compiled function built against
        an older layout is stale; changes to unrelated owners (another
        solver stack sharing the registry) leave it alone.
        """
        key = id(owner)
        children = self._children.get(key, {})
        return (self._stamps.get(key, 0),) + tuple(
            (name, self.version(child)) for name, child in children.items()
        )

    def _is_ancestor(self, candidate, owner) -> bool:
        stack = [candidate]
        while stack:
            node = stack.pop()
            if node is owner:
                return True
            stack.extend(self._children.get(id(node), {}).values())
        return False

    def update(self, owner, updates: Mapping[str, Any]) -> set[str]:
        """Move buffers of ``owner``: ``{"<buffer>_location": "shared"|"local"}``.

        Returns the set of keys recognised (a location key naming one of
        the owner's buffers). Other keys are ignored, so callers can route
        one settings dict through several components; a recognised key
        with a value other than ``"shared"`` or ``"local"`` raises.
        """
        key = self._key(owner)
        recognised = self.check_update(owner, updates)
        for setting in recognised:
            value = updates[setting]
            name = setting[: -len(LOCATION_SUFFIX)]
            buffer = self._buffers[key][name]
            self._location_overrides[key][name] = value
            if buffer.location != value:
                self._buffers[key][name] = attrs.evolve(buffer, location=value)
                self._touch(key)
        return recognised

    def check_update(self, owner, updates: Mapping[str, Any]) -> set[str]:
        """The keys :meth:`update` would recognise; raises what it would raise,
        changing nothing (so a caller can check every part of an update first)."""
        key = self._key(owner)
        recognised = set()
        for setting, value in updates.items():
            if not setting.endswith(LOCATION_SUFFIX):
                continue
            name = setting[: -len(LOCATION_SUFFIX)]
            buffer = self._buffers[key].get(name)
            if buffer is None:
                continue
            _check_location(value, setting)
            if buffer.aliases is not None:
                raise ValueError(
                    f"{setting}: {name!r} aliases {buffer.aliases!r} and follows its location; "
                    f"set {buffer.aliases}_location instead"
                )
            recognised.add(setting)
        return recognised

    def clear(self, owner) -> None:
        """Forget ``owner``'s buffers and children (location overrides stay)."""
        key = id(owner)
        if key in self._buffers:
            self._buffers[key] = {}
            self._children[key] = {}
            self._touch(key)

    # ------------------------------------------------------------------ queries
    def buffers(self, owner) -> dict[str, Buffer]:
        """The owner's own buffers, in registration order."""
        return dict(self._buffers.get(id(owner), {}))

    def children(self, owner) -> dict[str, Any]:
        return dict(self._children.get(id(owner), {}))

    def location_keys(self, owner, recursive: bool = True) -> set[str]:
        """Every ``<buffer>_location`` key of ``owner`` (and its children)."""
        keys = {
            b.name + LOCATION_SUFFIX
            for b in self._buffers.get(id(owner), {}).values()
            if b.aliases is None
        }
        if recursive:
            for child in self._children.get(id(owner), {}).values():
                keys |= self.location_keys(child)
        return keys

    def _resolved(self, owner) -> Iterable[tuple[Buffer, Buffer]]:
        """(buffer, storage) pairs: storage is the alias target, or itself."""
        own = self._buffers.get(id(owner), {})
        for buffer in own.values():
            yield buffer, own[buffer.aliases] if buffer.aliases else buffer

    def shared_buffer_size(self, owner) -> int:
        """Shared elements of ``owner`` including its children."""
        total = sum(
            b.size for b, s in self._resolved(owner) if b is s and s.location == "shared"
        )
        return total + sum(
            self.shared_buffer_size(c) for c in self._children.get(id(owner), {}).values()
        )

    def persistent_local_buffer_size(self, owner) -> int:
        """Persistent local elements of ``owner`` including its children."""
        total = sum(
            b.size
            for b, s in self._resolved(owner)
            if b is s and s.location == "local" and s.persistent
        )
        return total + sum(
            self.persistent_local_buffer_size(c)
            for c in self._children.get(id(owner), {}).values()
        )

    def local_buffer_size(self, owner) -> int:
        """Non-persistent local elements of ``owner`` itself.

        Per-call local arrays belong to the device function that declares
        them, so they do not roll up into parents (see
        :meth:`total_local_buffer_size` for the whole tree).
        """
        return sum(
            b.size
            for b, s in self._resolved(owner)
            if s.location == "local" and not s.persistent
        )

    def total_local_buffer_size(self, owner) -> int:
        """Non-persistent local elements of ``owner`` and all descendants."""
        return self.local_buffer_size(owner) + sum(
            self.total_local_buffer_size(c) for c in self._children.get(id(owner), {}).values()
        )

    def persistent_region_size(self, owner, target: str = "cuda") -> int:
        """Elements of the persistent region the kernel allocates per run.

        On ``cuda`` this is :meth:`persistent_local_buffer_size`; on ``cpu``
        non-persistent local buffers live in this region too.
        """
        size = self.persistent_local_buffer_size(owner)
        if targets.get_target(target).local_in_persistent:
            size += self.total_local_buffer_size(owner)
        return size

    def scratch_elements(self, owner) -> int:
        """Every element one run needs for ``owner``'s tree (any target)."""
        total = self.shared_buffer_size(owner) + self.persistent_local_buffer_size(owner)
        return total + self.total_local_buffer_size(owner)

    # ----------------------------------------------------------------- layout
    def layout(self, owner, target: str = "cuda") -> dict[str, Slot]:
        """Slots of the owner's buffers and children's regions on ``target``.

        Own shared buffers come first in the shared region, then each
        child's shared region in registration order; the same for the
        persistent region (on ``cpu``, own non-persistent local buffers
        follow own persistent ones). Children appear as ``Slot``s of region
        ``"shared"`` / ``"persistent"`` under ``"<child>.shared"``
        and ``"<child>.persistent"``.
        """
        in_persistent = targets.get_target(target).local_in_persistent
        slots: dict[str, Slot] = {}
        offsets = {"shared": 0, "persistent": 0}

        def place(region: str, size: int) -> Slot:
            slot = Slot(region, offsets[region], size)
            offsets[region] += size
            return slot

        own = self._buffers.get(id(owner), {})
        for buffer in own.values():  # storage
            if buffer.aliases is not None:
                continue
            if buffer.location == "shared":
                slots[buffer.name] = place("shared", buffer.size)
            elif buffer.persistent or in_persistent:
                slots[buffer.name] = place("persistent", buffer.size)
            else:
                slots[buffer.name] = Slot("local", 0, buffer.size)
        for buffer in own.values():  # aliases reuse their target's storage
            if buffer.aliases is None:
                continue
            storage = own[buffer.aliases]
            if storage.location == "local" and not storage.persistent:
                # a per-call local array cannot be shared: own storage
                if in_persistent:
                    slots[buffer.name] = place("persistent", buffer.size)
                else:
                    slots[buffer.name] = Slot("local", 0, buffer.size)
            else:
                reused = slots[storage.name]
                slots[buffer.name] = Slot(reused.region, reused.offset, buffer.size)
        for name, child in self._children.get(id(owner), {}).items():
            child_shared = self.shared_buffer_size(child)
            child_persistent = self.persistent_region_size(child, target)
            slots[f"{name}.shared"] = place("shared", child_shared)
            slots[f"{name}.persistent"] = place("persistent", child_persistent)
        return slots

    def get_allocator(
        self, name: str, owner, target: str = "cuda", precision=np.float64
    ) -> Callable:
        """Device function ``(shared, persistent) -> array`` for one buffer.

        ``shared`` and ``persistent`` are the owner's own regions (what its
        parent's child allocators handed it). The allocator returns a slice
        of one of them (sized for the target's lanes: element ``k`` of lane
        ``j`` at ``k * lanes + j``), or a fresh local array for a
        non-persistent local buffer where the target's layout policy keeps
        those out of the persistent region.
        """
        backend = targets.get_target(target)
        if name not in self._buffers.get(id(owner), {}):
            known = ", ".join(self._buffers.get(id(owner), {})) or "none"
            raise KeyError(f"no buffer {name!r} registered for this owner (registered: {known})")
        slot = self.layout(owner, target)[name]
        lanes = backend.lanes(precision)
        return backend.allocator(slot.region, slot.offset * lanes, slot.size * lanes, precision)

    def get_child_allocators(
        self, parent, child, name: str, target: str = "cuda", precision=np.float64
    ) -> tuple[Callable, Callable]:
        """Device functions handing ``child`` its shared and persistent slices.

        Returns ``(shared_slice, persistent_slice)``, each
        ``(shared, persistent) -> array`` over the parent's regions.
        """
        backend = targets.get_target(target)
        if self._children.get(id(parent), {}).get(name) is not child:
            raise KeyError(f"{name!r} is not a registered child of this parent")
        slots = self.layout(parent, target)
        lanes = backend.lanes(precision)
        return tuple(
            backend.allocator(slot.region, slot.offset * lanes, slot.size * lanes, precision)
            for slot in (slots[f"{name}.shared"], slots[f"{name}.persistent"])
        )
