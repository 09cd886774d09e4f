from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AvatarState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AVATAR_STATE_UNSPECIFIED: _ClassVar[AvatarState]
    PENDING: _ClassVar[AvatarState]
    READY: _ClassVar[AvatarState]
    FAILED: _ClassVar[AvatarState]

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    RAW_RGB8: _ClassVar[Encoding]
    RAW_RGBA8: _ClassVar[Encoding]
    JPEG: _ClassVar[Encoding]
    PNG: _ClassVar[Encoding]

class WindowMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_MODE_UNSPECIFIED: _ClassVar[WindowMode]
    CENTERED: _ClassVar[WindowMode]
    CAUSAL: _ClassVar[WindowMode]

class CameraMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAMERA_MODE_UNSPECIFIED: _ClassVar[CameraMode]
    PORTRAIT: _ClassVar[CameraMode]
    DRIVER: _ClassVar[CameraMode]
    PER_FRAME: _ClassVar[CameraMode]

class Delivery(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_UNSPECIFIED: _ClassVar[Delivery]
    ALL: _ClassVar[Delivery]
    LATEST: _ClassVar[Delivery]
AVATAR_STATE_UNSPECIFIED: AvatarState
PENDING: AvatarState
READY: AvatarState
FAILED: AvatarState
ENCODING_UNSPECIFIED: Encoding
RAW_RGB8: Encoding
RAW_RGBA8: Encoding
JPEG: Encoding
PNG: Encoding
WINDOW_MODE_UNSPECIFIED: WindowMode
CENTERED: WindowMode
CAUSAL: WindowMode
CAMERA_MODE_UNSPECIFIED: CameraMode
PORTRAIT: CameraMode
DRIVER: CameraMode
PER_FRAME: CameraMode
DELIVERY_UNSPECIFIED: Delivery
ALL: Delivery
LATEST: Delivery

class Avatar(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreateAvatarRequest(_message.Message):
    __slots__ = ("image", "coeffs", "camera", "aligned", "name")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COEFFS_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    coeffs: _containers.RepeatedScalarFieldContainer[float]
    camera: _containers.RepeatedScalarFieldContainer[float]
    aligned: bool
    name: str
    def __init__(self, image: _Optional[bytes] = ..., coeffs: _Optional[_Iterable[float]] = ..., camera: _Optional[_Iterable[float]] = ..., aligned: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class CreateAvatarProgress(_message.Message):
    __slots__ = ("avatar_id", "state", "step", "total_steps", "loss", "reason")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    state: AvatarState
    step: int
    total_steps: int
    loss: float
    reason: str
    def __init__(self, avatar_id: _Optional[str] = ..., state: _Optional[_Union[AvatarState, str]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class GetAvatarRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    def __init__(self, avatar_id: _Optional[str] = ...) -> None: ...

class AvatarInfo(_message.Message):
    __slots__ = ("avatar_id", "state", "reason", "name", "created_unix", "updated_unix", "step", "total_steps", "model_fingerprint")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    state: AvatarState
    reason: str
    name: str
    created_unix: float
    updated_unix: float
    step: int
    total_steps: int
    model_fingerprint: str
    def __init__(self, avatar_id: _Optional[str] = ..., state: _Optional[_Union[AvatarState, str]] = ..., reason: _Optional[str] = ..., name: _Optional[str] = ..., created_unix: _Optional[float] = ..., updated_unix: _Optional[float] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class ListAvatarsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAvatarsResponse(_message.Message):
    __slots__ = ("avatars",)
    AVATARS_FIELD_NUMBER: _ClassVar[int]
    avatars: _containers.RepeatedCompositeFieldContainer[AvatarInfo]
    def __init__(self, avatars: _Optional[_Iterable[_Union[AvatarInfo, _Mapping]]] = ...) -> None: ...

class DeleteAvatarRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    def __init__(self, avatar_id: _Optional[str] = ...) -> None: ...

class DeleteAvatarResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImportAvatarRequest(_message.Message):
    __slots__ = ("avatar_file", "name")
    AVATAR_FILE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    avatar_file: bytes
    name: str
    def __init__(self, avatar_file: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class ExportAvatarRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    def __init__(self, avatar_id: _Optional[str] = ...) -> None: ...

class ExportAvatarResponse(_message.Message):
    __slots__ = ("avatar_file",)
    AVATAR_FILE_FIELD_NUMBER: _ClassVar[int]
    avatar_file: bytes
    def __init__(self, avatar_file: _Optional[bytes] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_streams", "max_jobs", "max_image_bytes", "max_image_pixels", "max_receive_message_bytes", "max_send_message_bytes", "max_queue_depth", "idle_timeout_ms", "max_output_size", "max_abs_coefficient")
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    max_streams: int
    max_jobs: int
    max_image_bytes: int
    max_image_pixels: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_queue_depth: int
    idle_timeout_ms: int
    max_output_size: int
    max_abs_coefficient: float
    def __init__(self, max_streams: _Optional[int] = ..., max_jobs: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_queue_depth: _Optional[int] = ..., idle_timeout_ms: _Optional[int] = ..., max_output_size: _Optional[int] = ..., max_abs_coefficient: _Optional[float] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("streams_active", "streams_opened", "streams_closed", "streams_rejected", "frames_rendered", "frames_dropped", "frames_inflight", "jobs_active", "render_errors", "max_queue_depth")
    STREAMS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    STREAMS_OPENED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_CLOSED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_RENDERED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    JOBS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RENDER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    streams_active: int
    streams_opened: int
    streams_closed: int
    streams_rejected: int
    frames_rendered: int
    frames_dropped: int
    frames_inflight: int
    jobs_active: int
    render_errors: int
    max_queue_depth: int
    def __init__(self, streams_active: _Optional[int] = ..., streams_opened: _Optional[int] = ..., streams_closed: _Optional[int] = ..., streams_rejected: _Optional[int] = ..., frames_rendered: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., frames_inflight: _Optional[int] = ..., jobs_active: _Optional[int] = ..., render_errors: _Optional[int] = ..., max_queue_depth: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "model_fingerprint", "resolution", "coefficients_per_frame", "coefficient_layout", "window", "encodings", "limits", "providers", "can_create", "stats")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENT_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    CAN_CREATE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    version: str
    model_fingerprint: str
    resolution: int
    coefficients_per_frame: int
    coefficient_layout: str
    window: int
    encodings: _containers.RepeatedScalarFieldContainer[Encoding]
    limits: ServerLimits
    providers: _containers.RepeatedScalarFieldContainer[str]
    can_create: bool
    stats: ServerStats
    def __init__(self, version: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., resolution: _Optional[int] = ..., coefficients_per_frame: _Optional[int] = ..., coefficient_layout: _Optional[str] = ..., window: _Optional[int] = ..., encodings: _Optional[_Iterable[_Union[Encoding, str]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., providers: _Optional[_Iterable[str]] = ..., can_create: _Optional[bool] = ..., stats: _Optional[_Union[ServerStats, _Mapping]] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("avatar_id", "output_size", "encoding", "window_mode", "camera_mode", "delivery", "queue_depth", "jpeg_quality")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MODE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    output_size: int
    encoding: Encoding
    window_mode: WindowMode
    camera_mode: CameraMode
    delivery: Delivery
    queue_depth: int
    jpeg_quality: int
    def __init__(self, avatar_id: _Optional[str] = ..., output_size: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., window_mode: _Optional[_Union[WindowMode, str]] = ..., camera_mode: _Optional[_Union[CameraMode, str]] = ..., delivery: _Optional[_Union[Delivery, str]] = ..., queue_depth: _Optional[int] = ..., jpeg_quality: _Optional[int] = ...) -> None: ...

class CoefficientFrame(_message.Message):
    __slots__ = ("index", "coeffs", "camera")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COEFFS_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    index: int
    coeffs: _containers.RepeatedScalarFieldContainer[float]
    camera: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., coeffs: _Optional[_Iterable[float]] = ..., camera: _Optional[_Iterable[float]] = ...) -> None: ...

class EndOfStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("header", "frame", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    frame: CoefficientFrame
    end: EndOfStream
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., frame: _Optional[_Union[CoefficientFrame, _Mapping]] = ..., end: _Optional[_Union[EndOfStream, _Mapping]] = ...) -> None: ...

class FrameTimings(_message.Message):
    __slots__ = ("queue_ms", "render_ms", "encode_ms", "total_ms", "batch_size")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    RENDER_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    render_ms: float
    encode_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, queue_ms: _Optional[float] = ..., render_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("index", "width", "height", "encoding", "data", "timings", "dropped")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    index: int
    width: int
    height: int
    encoding: Encoding
    data: bytes
    timings: FrameTimings
    dropped: int
    def __init__(self, index: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., data: _Optional[bytes] = ..., timings: _Optional[_Union[FrameTimings, _Mapping]] = ..., dropped: _Optional[int] = ...) -> None: ...
