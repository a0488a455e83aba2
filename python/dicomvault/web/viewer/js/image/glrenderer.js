// WebGL2 renderer: the stored values go to the GPU as they are (16-bit integer or float
// textures) and the shader applies the modality LUT, the window or VOI LUT, MONOCHROME1 and
// invert, so a window/level drag is one uniform change and one draw.
//
// Sampling is texelFetch at floor(image coordinate): pixel-exact at any zoom (no smoothing
// that would invent values a radiologist could mistake for signal). Below 1:1 a box-filtered
// mip level is used instead, so a 4k mammogram fitted to the screen is not aliased.

// The canvas → image mapping is affine, so it is computed per vertex and interpolated: exact, and
// one matrix product less per fragment (which counts where the "GPU" is SwiftShader on the CPU).
const VERTEX = `#version 300 es
in vec2 a_pos;
uniform mat3 u_canvasToImage;  // canvas pixel (y down) -> image coordinate at this level
uniform vec2 u_canvasSize;
out vec2 v_img;
void main() {
  vec2 canvas = vec2((a_pos.x + 1.0) * 0.5 * u_canvasSize.x, (1.0 - a_pos.y) * 0.5 * u_canvasSize.y);
  v_img = (u_canvasToImage * vec3(canvas, 1.0)).xy;
  gl_Position = vec4(a_pos, 0.0, 1.0);
}`;

/**
 * The fragment shader of one mode. Modes are compile-time (#if) rather than uniform branches:
 * under SwiftShader, the CPU "GPU" of machines without one, every uniform branch and unused
 * texture fetch costs on each of the ~700k fragments, and specialising cut a draw several-fold.
 * mode: {sampler, kind: "int"|"uint"|"float", rgb, lut: 0 none | 1 modality LUT | 2 VOI LUT, fusion}
 */
function fragment({ sampler, kind, rgb, lut, fusion }) {
  return `#version 300 es
#define RGB ${rgb ? 1 : 0}
#define LUT ${lut}
#define FUSION ${fusion ? 1 : 0}
precision highp float;
precision highp int;
precision highp ${sampler};
precision highp sampler2D;
uniform ${sampler} u_image;
uniform sampler2D u_lut;       // modality or VOI LUT values, 256 x N (R32F)
uniform sampler2D u_colormap;  // fusion colour map, 256 x 1
uniform sampler2D u_fuse;      // fusion layer: modality values on this image's grid (R32F)
in vec2 v_img;
uniform ivec2 u_size;
uniform float u_slope, u_intercept;
uniform float u_center, u_width;
uniform float u_lutFirst, u_lutMax;
uniform int u_lutLength;
uniform bool u_invert;
uniform float u_fuseCenter, u_fuseWidth, u_fuseOpacity;
out vec4 outColor;

float lutAt(float index) {
  int i = clamp(int(floor(index)), 0, u_lutLength - 1);
  return texelFetch(u_lut, ivec2(i & 255, i >> 8), 0).r;
}

float window01(float x, float center, float width) {
  // PS3.3 C.11.2.1.2.1, the same function as lut.js linearWindow.
  float c = center - 0.5;
  float w = max(width - 1.0, 1e-6);
  if (x <= c - w / 2.0) return 0.0;
  if (x > c + w / 2.0) return 1.0;
  return (x - c) / w + 0.5;
}

void main() {
  vec2 img = v_img;
  ivec2 t = ivec2(floor(img));
  if (img.x < 0.0 || img.y < 0.0 || t.x >= u_size.x || t.y >= u_size.y) {
    outColor = vec4(0.0, 0.0, 0.0, 1.0);
    return;
  }
  vec4 texel = vec4(texelFetch(u_image, t, 0));
  vec3 rgb;
#if RGB
  // Colour images: a plain contrast stretch; the default (127.5, 255) is the identity.
  rgb = clamp((texel.rgb - (u_center - u_width / 2.0)) / max(u_width, 1e-6), 0.0, 1.0);
#else
  float stored = ${kind === "float" ? "texel.r" : "float(texel.r)"};
#if LUT == 1
  float v = lutAt(stored - u_lutFirst);
#else
  float v = stored * u_slope + u_intercept;
#endif
#if LUT == 2
  float g = lutAt(v - u_lutFirst) / u_lutMax;
#else
  float g = window01(v, u_center, u_width);
#endif
  rgb = vec3(g);
#endif
  if (u_invert) rgb = 1.0 - rgb;
#if FUSION
  float f = texelFetch(u_fuse, t, 0).r;
  if (f == f) {   // NaN marks "no overlay data here"
    float k = window01(f, u_fuseCenter, u_fuseWidth);
    vec3 c = texelFetch(u_colormap, ivec2(int(k * 255.0), 0), 0).rgb;
    rgb = mix(rgb, c, u_fuseOpacity * step(0.001, k));
  }
#endif
  // The output is quantised once, here, the way the tests compute it: floor(g * 255 + 0.5).
  outColor = vec4(floor(rgb * 255.0 + 0.5) / 255.0, 1.0);
}`;
}

const SAMPLERS = { int: "isampler2D", uint: "usampler2D", float: "sampler2D" };

function compile(gl, type, src) {
  const s = gl.createShader(type);
  gl.shaderSource(s, src);
  gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(`shader: ${gl.getShaderInfoLog(s)}`);
  return s;
}

function program(gl, fsrc) {
  const p = gl.createProgram();
  gl.attachShader(p, compile(gl, gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(p, compile(gl, gl.FRAGMENT_SHADER, fsrc));
  gl.bindAttribLocation(p, 0, "a_pos");
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(`program: ${gl.getProgramInfoLog(p)}`);
  const uniforms = {};
  const n = gl.getProgramParameter(p, gl.ACTIVE_UNIFORMS);
  for (let i = 0; i < n; i++) {
    const info = gl.getActiveUniform(p, i);
    uniforms[info.name] = gl.getUniformLocation(p, info.name);
  }
  return { p, uniforms };
}

/** Texture format of a pixels object: [internalFormat, format, type, programKind]. */
function formatOf(gl, pixels) {
  const d = pixels.data;
  if (pixels.samples === 3) return [gl.RGB8UI, gl.RGB_INTEGER, gl.UNSIGNED_BYTE, "uint"];
  if (d instanceof Int16Array) return [gl.R16I, gl.RED_INTEGER, gl.SHORT, "int"];
  if (d instanceof Uint16Array) return [gl.R16UI, gl.RED_INTEGER, gl.UNSIGNED_SHORT, "uint"];
  if (d instanceof Uint8Array) return [gl.R8UI, gl.RED_INTEGER, gl.UNSIGNED_BYTE, "uint"];
  if (d instanceof Float32Array) return [gl.R32F, gl.RED, gl.FLOAT, "float"];
  throw new Error(`no texture format for ${d.constructor.name}`);
}

export class GLRenderer {
  /** Throws when WebGL2 is unavailable; the viewport then falls back to Canvas 2D. */
  constructor(canvas) {
    const gl = canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: false, alpha: false });
    if (!gl) throw new Error("WebGL2 is not available");
    this.gl = gl;
    this.canvas = canvas;
    this.kind = "webgl2";
    this.maxTextureSize = gl.getParameter(gl.MAX_TEXTURE_SIZE);
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const name = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
    /** The software rasterizer behind this context, or "" for a real GPU. */
    this.software = (/SwiftShader|llvmpipe|softpipe|Software Rasterizer/i.exec(name) || [""])[0];
    this.programs = new Map();   // mode key -> compiled program, built on first use
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    this.imageTex = gl.createTexture();
    this.lutTex = gl.createTexture();
    this.fuseTex = gl.createTexture();
    this.colormapTex = gl.createTexture();
    for (const t of [this.imageTex, this.lutTex, this.fuseTex, this.colormapTex]) {
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    }
    this.uploaded = null;   // the pixels object (or mip level) now in imageTex
    this.uploadedLut = null;
    this.uploadedFuse = null;
    this.uploadedColormap = null;
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  }

  upload(tex, unit, pixels, fmt) {
    const gl = this.gl;
    gl.activeTexture(gl.TEXTURE0 + unit);
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texImage2D(gl.TEXTURE_2D, 0, fmt[0], pixels.width, pixels.height, 0, fmt[1], fmt[2], pixels.data);
  }

  uploadLut(lut) {
    const gl = this.gl;
    gl.activeTexture(gl.TEXTURE1);
    gl.bindTexture(gl.TEXTURE_2D, this.lutTex);
    if (this.uploadedLut === lut) return;
    const rows = Math.max(1, Math.ceil(lut.data.length / 256));
    const f = new Float32Array(rows * 256);
    f.set(lut.data);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, 256, rows, 0, gl.RED, gl.FLOAT, f);
    this.uploadedLut = lut;
  }

  /**
   * Draw `view`: {pixels (or a mip level of it), image, canvasToImage (9 numbers, column-major
   * mat3), center, width, invert, useVoiLut, fusion: {values: Float32Array|null, center, width,
   * opacity, colormap: Uint8Array(256*4)} | null}.
   */
  draw(view) {
    const gl = this.gl;
    const { pixels, image } = view;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (!pixels) return;
    const fmt = formatOf(gl, pixels);
    const voi = view.useVoiLut && image.voiLut;
    const mode = {
      kind: fmt[3], sampler: SAMPLERS[fmt[3]], rgb: pixels.samples === 3,
      lut: pixels.samples === 3 ? 0 : voi ? 2 : image.modalityLut ? 1 : 0,
      fusion: !!(view.fusion && view.fusion.values),
    };
    const key = `${mode.kind}|${mode.rgb}|${mode.lut}|${mode.fusion}`;
    let prog = this.programs.get(key);
    if (!prog) {
      prog = program(gl, fragment(mode));
      this.programs.set(key, prog);
    }
    gl.useProgram(prog.p);
    const u = prog.uniforms;
    if (this.uploaded !== pixels) {
      this.upload(this.imageTex, 0, pixels, fmt);
      this.uploaded = pixels;
    } else {
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this.imageTex);
    }
    gl.uniform1i(u.u_image, 0);
    const lut = mode.lut === 2 ? image.voiLut : mode.lut === 1 ? image.modalityLut : null;
    if (lut) this.uploadLut(lut);
    gl.uniform1i(u.u_lut, 1);
    gl.uniform1i(u.u_lutLength, lut ? lut.data.length : 1);
    gl.uniform1f(u.u_lutFirst, lut ? lut.first : 0);
    gl.uniform1f(u.u_lutMax, lut ? (1 << lut.bits) - 1 : 1);
    gl.uniformMatrix3fv(u.u_canvasToImage, false, view.canvasToImage);
    gl.uniform2f(u.u_canvasSize, this.canvas.width, this.canvas.height);
    gl.uniform2i(u.u_size, pixels.width, pixels.height);
    gl.uniform1f(u.u_slope, view.slope ?? image.slope);
    gl.uniform1f(u.u_intercept, view.intercept ?? image.intercept);
    gl.uniform1f(u.u_center, view.center);
    gl.uniform1f(u.u_width, view.width);
    gl.uniform1i(u.u_invert, view.invert ? 1 : 0);
    const fusion = view.fusion;
    gl.uniform1i(u.u_fuse, 2);
    gl.uniform1i(u.u_colormap, 3);
    if (fusion && fusion.values) {
      if (this.uploadedFuse !== fusion.values) {
        gl.activeTexture(gl.TEXTURE2);
        gl.bindTexture(gl.TEXTURE_2D, this.fuseTex);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, pixels.width, pixels.height, 0, gl.RED, gl.FLOAT, fusion.values);
        this.uploadedFuse = fusion.values;
      }
      if (this.uploadedColormap !== fusion.colormap) {
        gl.activeTexture(gl.TEXTURE3);
        gl.bindTexture(gl.TEXTURE_2D, this.colormapTex);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, 256, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, fusion.colormap);
        this.uploadedColormap = fusion.colormap;
      }
      gl.uniform1f(u.u_fuseCenter, fusion.center);
      gl.uniform1f(u.u_fuseWidth, fusion.width);
      gl.uniform1f(u.u_fuseOpacity, fusion.opacity);
    }
    // Unbound sampler units must still hold a texture of a compatible kind.
    gl.activeTexture(gl.TEXTURE2);
    gl.bindTexture(gl.TEXTURE_2D, this.fuseTex);
    if (!this.uploadedFuse) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, 1, 1, 0, gl.RED, gl.FLOAT, new Float32Array([NaN]));
      this.uploadedFuse = "empty";
    }
    gl.activeTexture(gl.TEXTURE3);
    gl.bindTexture(gl.TEXTURE_2D, this.colormapTex);
    if (!this.uploadedColormap) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, 1, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
      this.uploadedColormap = "empty";
    }
    if (!lut) {
      gl.activeTexture(gl.TEXTURE1);
      gl.bindTexture(gl.TEXTURE_2D, this.lutTex);
      if (!this.uploadedLut) {
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, 1, 1, 0, gl.RED, gl.FLOAT, new Float32Array(1));
        this.uploadedLut = "empty";
      }
    }
    gl.bindVertexArray(this.vao);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }

  /** Give the context back at once (browsers cap live WebGL contexts per page). */
  release() {
    this.gl.getExtension("WEBGL_lose_context")?.loseContext();
  }

  /** RGBA of the canvas pixel (x, y), y down (for tests and the pixel probe). */
  readPixel(x, y) {
    const gl = this.gl;
    const out = new Uint8Array(4);
    gl.readPixels(Math.floor(x), this.canvas.height - 1 - Math.floor(y), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
    return Array.from(out);
  }
}
