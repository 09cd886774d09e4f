// otavatar Unity client: streams rendered avatar frames from `otavatar serve` into a Texture2D (RGBA32).
//
// Transport: grpc-dotnet (Grpc.Net.Client) over Cysharp's YetAnotherHttpHandler (HTTP/2 for Unity, which has no
// HTTP/2 in its own HttpClient). Generated code: Avatar.cs + AvatarGrpc.cs from proto/avatar/v1/avatar.proto
// (namespace Otavatar.Avatar.V1) -- see README.md for the protoc steps.
//
// Attach to a GameObject, set Target / AvatarId / Token in the inspector and assign `Output` (e.g. a RawImage's
// texture or a material's _MainTex). Coefficients come from `CoefficientSource` (70 floats per frame: 64
// expression, 3 angles, 3 translations); the default is a small "talking" sine motion.
using System;
using System.Collections.Concurrent;
using System.Threading;
using System.Threading.Tasks;
using Cysharp.Net.Http;
using Grpc.Core;
using Grpc.Net.Client;
using Otavatar.Avatar.V1;
using UnityEngine;

public class AvatarClient : MonoBehaviour
{
    [Tooltip("http://host:port for plaintext (loopback), https://host:port with TLS")]
    public string Target = "http://127.0.0.1:50051";
    public string Token = "";                 // sent as `authorization: Bearer <token>` when set
    public string AvatarId = "";              // from CreateAvatar / ImportAvatar
    public int OutputSize = 0;                // 0 = the model's resolution (128 tiny, 512 official)
    public float FramesPerSecond = 30f;
    public bool Causal = true;                // false: centred window, 13 frames (~0.43 s at 30 fps) of delay
    public Texture2D Output;                  // created on the first frame, RGBA32

    /// <summary>Frame index -> 70 coefficients. Replace with your face tracker or audio-driven source.</summary>
    public Func<long, float[]> CoefficientSource = TalkingMotion;

    private GrpcChannel _channel;
    private CancellationTokenSource _cancel;
    // newest frame wins: the render thread may deliver faster than Update() runs (the server drops stale frames
    // too, with Delivery.Latest)
    private readonly ConcurrentQueue<RenderResponse> _frames = new ConcurrentQueue<RenderResponse>();
    private byte[] _flipped;

    private void OnEnable()
    {
        _channel = GrpcChannel.ForAddress(Target, new GrpcChannelOptions
        {
            HttpHandler = new YetAnotherHttpHandler { Http2Only = true },
            DisposeHttpClient = true,
            MaxReceiveMessageSize = 16 * 1024 * 1024,   // 512x512 RGBA = 1 MiB per frame, above some defaults
            MaxSendMessageSize = 16 * 1024 * 1024,
        });
        _cancel = new CancellationTokenSource();
        _ = RunAsync(_cancel.Token);
    }

    private void OnDisable()
    {
        _cancel?.Cancel();                              // the server sees CANCELLED and frees the stream
        _channel?.Dispose();
    }

    private Metadata Headers()
    {
        var headers = new Metadata();
        if (!string.IsNullOrEmpty(Token)) headers.Add("authorization", "Bearer " + Token);
        return headers;
    }

    private async Task RunAsync(CancellationToken cancel)
    {
        var client = new AvatarService.AvatarServiceClient(_channel);
        try
        {
            using var call = client.RenderStream(Headers(), cancellationToken: cancel);
            await call.RequestStream.WriteAsync(new RenderRequest
            {
                Header = new StreamHeader
                {
                    AvatarId = AvatarId,
                    OutputSize = OutputSize,
                    Encoding = Encoding.RawRgba8,
                    WindowMode = Causal ? WindowMode.Causal : WindowMode.Centered,
                    CameraMode = CameraMode.Portrait,
                    Delivery = Delivery.Latest,
                    QueueDepth = 2,
                },
            });
            var reader = Task.Run(async () =>
            {
                await foreach (var response in call.ResponseStream.ReadAllAsync(cancel))
                {
                    _frames.Enqueue(response);
                    while (_frames.Count > 2 && _frames.TryDequeue(out _)) { }   // keep the newest
                }
            }, cancel);
            var period = TimeSpan.FromSeconds(1.0 / FramesPerSecond);
            for (long index = 0; !cancel.IsCancellationRequested; index++)
            {
                var frame = new CoefficientFrame { Index = index };
                frame.Coeffs.Add(CoefficientSource(index));
                await call.RequestStream.WriteAsync(new RenderRequest { Frame = frame });
                await Task.Delay(period, cancel);
            }
            await call.RequestStream.WriteAsync(new RenderRequest { End = new EndOfStream() });
            await call.RequestStream.CompleteAsync();
            await reader;
        }
        catch (OperationCanceledException) { }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled) { }
        catch (RpcException e)
        {
            // INVALID_ARGUMENT names the frame index and the problem; NOT_FOUND: wrong id or tenant;
            // RESOURCE_EXHAUSTED: the server is full (retry after the trailing retry-after-ms)
            Debug.LogError($"otavatar stream ended: {e.StatusCode}: {e.Status.Detail}");
        }
    }

    private void Update()
    {
        RenderResponse newest = null;
        while (_frames.TryDequeue(out var r)) newest = r;
        if (newest == null) return;
        int w = newest.Width, h = newest.Height;
        if (Output == null || Output.width != w || Output.height != h)
            Output = new Texture2D(w, h, TextureFormat.RGBA32, false);
        // the wire rows run top to bottom, Unity's texture rows bottom to top: flip while copying
        int stride = w * 4;
        var data = newest.Data.Span;
        if (_flipped == null || _flipped.Length != data.Length) _flipped = new byte[data.Length];
        for (int y = 0; y < h; y++)
            data.Slice((h - 1 - y) * stride, stride).CopyTo(new Span<byte>(_flipped, y * stride, stride));
        Output.LoadRawTextureData(_flipped);
        Output.Apply(false);
    }

    private static float[] TalkingMotion(long index)
    {
        var c = new float[70];
        for (int k = 0; k < 10; k++) c[k] = 0.5f * Mathf.Sin(0.3f * index + k);
        return c;
    }
}
