// The camera, for snapshots sent as images.

let stream = null;

export async function camera() {
  stream ??= await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  return stream;
}

/** A JPEG data URL of what the camera sees now. */
export async function snapshot() {
  const video = document.createElement("video");
  video.muted = true;
  video.srcObject = await camera();
  await video.play();
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth || 640;
  canvas.height = video.videoHeight || 480;
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  video.pause();
  return canvas.toDataURL("image/jpeg", 0.85);
}
