"""BufferRegistry: sizes, child roll-ups, aliasing, location updates, isolation."""

import numpy as np
import pytest

from cubie_kernel import targets
from cubie_kernel.buffers import BufferRegistry


class Owner:
    """A stand-in component (owners are compared by identity)."""


@pytest.fixture
def registry():
    return BufferRegistry()


def test_sizes_by_location(registry):
    owner = Owner()
    registry.register("a", owner, 3, location="shared")
    registry.register("b", owner, 5, location="local")
    registry.register("c", owner, 7, location="local", persistent=True)
    registry.register("d", owner, 11, location="shared", persistent=True)
    assert registry.shared_buffer_size(owner) == 3 + 11
    assert registry.local_buffer_size(owner) == 5
    assert registry.persistent_local_buffer_size(owner) == 7
    assert registry.scratch_elements(owner) == 3 + 5 + 7 + 11


def test_child_totals_roll_up_but_per_call_locals_do_not(registry):
    parent, child, grandchild = Owner(), Owner(), Owner()
    registry.register("p", parent, 2, location="shared")
    registry.register("c_shared", child, 4, location="shared")
    registry.register("c_local", child, 8, location="local")
    registry.register("c_keep", child, 16, location="local", persistent=True)
    registry.register("g_shared", grandchild, 32, location="shared")
    registry.register("g_keep", grandchild, 64, location="local", persistent=True)
    registry.register_child(parent, child, "child")
    registry.register_child(child, grandchild, "grandchild")
    assert registry.shared_buffer_size(parent) == 2 + 4 + 32
    assert registry.persistent_local_buffer_size(parent) == 16 + 64
    assert registry.local_buffer_size(parent) == 0
    assert registry.total_local_buffer_size(parent) == 8
    assert registry.scratch_elements(parent) == 2 + 4 + 8 + 16 + 32 + 64


def test_layout_gives_disjoint_slots_on_both_targets(registry):
    parent, child = Owner(), Owner()
    registry.register("s1", parent, 3, location="shared")
    registry.register("l1", parent, 4, location="local")
    registry.register("p1", parent, 5, location="local", persistent=True)
    registry.register("s2", child, 6, location="shared")
    registry.register("p2", child, 7, location="local", persistent=True)
    registry.register("l2", child, 2, location="local")
    registry.register_child(parent, child, "child")
    for target in ("cpu", "cuda"):
        slots = registry.layout(parent, target)
        used = {"shared": set(), "persistent": set()}
        for name, slot in slots.items():
            if slot.region == "local":
                continue
            cells = set(range(slot.offset, slot.offset + slot.size))
            assert not used[slot.region] & cells, (target, name)
            used[slot.region] |= cells
        assert used["shared"] == set(range(registry.shared_buffer_size(parent)))
        assert used["persistent"] == set(range(registry.persistent_region_size(parent, target)))
    # on cpu every local buffer becomes part of the persistent region
    assert registry.persistent_region_size(parent, "cpu") == 5 + 7 + 4 + 2
    assert registry.persistent_region_size(parent, "cuda") == 5 + 7
    assert registry.layout(parent, "cuda")["l1"].region == "local"
    assert registry.layout(parent, "cpu")["l1"].region == "persistent"


def test_child_allocators_hand_out_the_childs_region(registry):
    parent, child = Owner(), Owner()
    registry.register("own", parent, 3, location="shared")
    registry.register("mine", child, 4, location="shared")
    registry.register_child(parent, child, "child")
    shared_slice, persistent_slice = registry.get_child_allocators(parent, child, "child", "cpu")
    # the cpu target's allocators hand out lane-form slices: L elements per element
    L = targets.get_target("cpu").lanes(np.float64)
    shared = np.arange(registry.shared_buffer_size(parent) * L, dtype=np.float64)
    persistent = np.zeros(registry.persistent_region_size(parent, "cpu") * L)
    child_shared = shared_slice(shared, persistent)
    np.testing.assert_array_equal(child_shared, np.arange(3 * L, 7 * L))
    mine = registry.get_allocator("mine", child, "cpu")(child_shared, persistent_slice(shared, persistent))
    mine[:] = -1
    np.testing.assert_array_equal(shared, np.r_[np.arange(3 * L), np.full(4 * L, -1.0)])


def test_alias_reuses_storage(registry):
    owner = Owner()
    registry.register("big", owner, 6, location="shared")
    registry.register("small", owner, 4, aliases="big")
    assert registry.shared_buffer_size(owner) == 6
    L = targets.get_target("cpu").lanes(np.float64)
    shared = np.zeros(6 * L)
    big = registry.get_allocator("big", owner, "cpu")(shared, np.zeros(0))
    small = registry.get_allocator("small", owner, "cpu")(shared, np.zeros(0))
    small[:] = 7
    np.testing.assert_array_equal(big, np.r_[np.full(4 * L, 7.0), np.zeros(2 * L)])
    # the alias follows its target when the target moves
    registry.update(owner, {"big_location": "local"})
    assert registry.shared_buffer_size(owner) == 0
    assert registry.local_buffer_size(owner) == 6 + 4  # per-call locals cannot share
    registry.update(owner, {"big_location": "shared"})
    registry.register("keep", owner, 5, location="local", persistent=True)
    registry.register("keep_alias", owner, 5, aliases="keep")
    assert registry.persistent_local_buffer_size(owner) == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aliases": "missing"}, "not registered"),
        ({"aliases": "big", "size": 9}, "must fit"),
    ],
)
def test_bad_aliases(registry, kwargs, message):
    owner = Owner()
    registry.register("big", owner, 6, location="shared")
    args = {"size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        registry.register("alias", owner, **args)


def test_location_updates(registry):
    owner = Owner()
    registry.register("state", owner, 3)
    registry.register("stages", owner, 12)
    before = registry.generation
    recognised = registry.update(
        owner, {"state_location": "shared", "dt": 0.1, "nothing_location": "shared"}
    )
    assert recognised == {"state_location"}
    assert registry.shared_buffer_size(owner) == 3
    assert registry.local_buffer_size(owner) == 12
    assert registry.generation > before
    # an update to the current value changes nothing
    stable = registry.generation
    registry.update(owner, {"state_location": "shared"})
    assert registry.generation == stable
    # a re-registration keeps the location the user chose
    registry.register("state", owner, 4)
    assert registry.shared_buffer_size(owner) == 4
    with pytest.raises(ValueError, match="state_location.*'shared', 'local'"):
        registry.update(owner, {"state_location": "global"})


def test_registries_are_isolated():
    first, second = BufferRegistry(), BufferRegistry()
    owner = Owner()
    first.register("x", owner, 10, location="shared")
    assert first.shared_buffer_size(owner) == 10
    assert second.shared_buffer_size(owner) == 0
    second.register("x", owner, 3, location="shared")
    assert first.shared_buffer_size(owner) == 10


@pytest.mark.parametrize(
    "args, error, message",
    [
        (("x", 3, "global"), ValueError, "location must be one of"),
        (("x", -1), ValueError, "size must be an int >= 0"),
        (("x", 2.5), ValueError, "size must be an int >= 0"),
        (("not an identifier", 2), ValueError, "identifier"),
    ],
)
def test_bad_registrations(registry, args, error, message):
    with pytest.raises(error, match=message):
        registry.register(args[0], Owner(), *args[1:])


def test_child_errors(registry):
    parent, child = Owner(), Owner()
    registry.register_child(parent, child, "child")
    with pytest.raises(ValueError, match="cycle"):
        registry.register_child(child, parent, "parent")
    with pytest.raises(ValueError, match="own child"):
        registry.register_child(parent, parent, "me")
    with pytest.raises(KeyError, match="not a registered child"):
        registry.get_child_allocators(parent, Owner(), "child")
    with pytest.raises(KeyError, match="no buffer 'nope'"):
        registry.get_allocator("nope", parent)


def test_versions_track_only_an_owners_subtree(registry):
    first, first_child, second = Owner(), Owner(), Owner()
    registry.register("a", first, 2)
    registry.register_child(first, first_child, "child")
    registry.register("b", second, 3)
    before_first, before_second = registry.version(first), registry.version(second)
    registry.register("c", second, 4)  # another stack changes
    assert registry.version(first) == before_first
    assert registry.version(second) != before_second
    registry.update(first_child, {"nothing_location": "shared"})  # not a buffer: no change
    assert registry.version(first) == before_first
    registry.register("d", first_child, 1)  # a change deep in the subtree
    assert registry.version(first) != before_first
