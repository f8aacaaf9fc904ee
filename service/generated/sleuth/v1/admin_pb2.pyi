from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActivateRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: str
    def __init__(self, kind: _Optional[str] = ...) -> None: ...

class SwapResponse(_message.Message):
    __slots__ = ("kind", "version", "previous_version", "load_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: str
    previous_version: str
    load_ms: float
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[str] = ..., previous_version: _Optional[str] = ..., load_ms: _Optional[float] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedVersion(_message.Message):
    __slots__ = ("kind", "version", "since", "inflight", "draining")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: str
    since: str
    inflight: int
    draining: bool
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[str] = ..., since: _Optional[str] = ..., inflight: _Optional[int] = ..., draining: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("served", "registry", "registry_active", "uptime_seconds", "swaps")
    class RegistryActiveEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVED_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    served: _containers.RepeatedCompositeFieldContainer[ServedVersion]
    registry: str
    registry_active: _containers.ScalarMap[str, str]
    uptime_seconds: float
    swaps: int
    def __init__(self, served: _Optional[_Iterable[_Union[ServedVersion, _Mapping]]] = ..., registry: _Optional[str] = ..., registry_active: _Optional[_Mapping[str, str]] = ..., uptime_seconds: _Optional[float] = ..., swaps: _Optional[int] = ...) -> None: ...
