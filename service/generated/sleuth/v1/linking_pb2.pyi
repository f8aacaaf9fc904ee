from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MentionSpan(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class LinkOptions(_message.Message):
    __slots__ = ("top_candidates", "nil_threshold", "coreference", "include_nil")
    TOP_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    NIL_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COREFERENCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NIL_FIELD_NUMBER: _ClassVar[int]
    top_candidates: int
    nil_threshold: float
    coreference: bool
    include_nil: bool
    def __init__(self, top_candidates: _Optional[int] = ..., nil_threshold: _Optional[float] = ..., coreference: _Optional[bool] = ..., include_nil: _Optional[bool] = ...) -> None: ...

class LinkRequest(_message.Message):
    __slots__ = ("text", "mentions", "options")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    mentions: _containers.RepeatedCompositeFieldContainer[MentionSpan]
    options: LinkOptions
    def __init__(self, text: _Optional[str] = ..., mentions: _Optional[_Iterable[_Union[MentionSpan, _Mapping]]] = ..., options: _Optional[_Union[LinkOptions, _Mapping]] = ...) -> None: ...

class CandidateScore(_message.Message):
    __slots__ = ("entity_id", "name", "score")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    name: str
    score: float
    def __init__(self, entity_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class LinkedMention(_message.Message):
    __slots__ = ("start", "end", "surface", "entity_id", "name", "score", "nil", "label", "coreferent", "candidates")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NIL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COREFERENT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    surface: str
    entity_id: str
    name: str
    score: float
    nil: bool
    label: str
    coreferent: bool
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateScore]
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., surface: _Optional[str] = ..., entity_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ..., nil: _Optional[bool] = ..., label: _Optional[str] = ..., coreferent: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[CandidateScore, _Mapping]]] = ...) -> None: ...

class LinkResponse(_message.Message):
    __slots__ = ("mentions", "kb_version", "model_version", "server_time_ms")
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    KB_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    mentions: _containers.RepeatedCompositeFieldContainer[LinkedMention]
    kb_version: str
    model_version: str
    server_time_ms: float
    def __init__(self, mentions: _Optional[_Iterable[_Union[LinkedMention, _Mapping]]] = ..., kb_version: _Optional[str] = ..., model_version: _Optional[str] = ..., server_time_ms: _Optional[float] = ...) -> None: ...
