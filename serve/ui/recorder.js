// AudioWorklet processor of the voxray page (/ui/app.js): forwards the first input channel's
// samples (Float32Array blocks at the AudioContext's rate) to the page, which encodes them as
// 16-bit WAV when recording stops.
class PcmCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("pcm-capture", PcmCapture);
