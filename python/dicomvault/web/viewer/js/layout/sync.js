// Synchronised scrolling by slice position, not index: a current CT at 1 mm and a prior at 5 mm
// stay on the same anatomy. Series of one frame of reference share patient coordinates; for a
// prior (another frame of reference) the offset between the two positions when the link is
// made is kept, so the reader aligns the anatomy once and then scrolls both.
import { nearestByPosition, normalOf } from "../data/series.js";

export class ScrollSync {
  constructor() {
    this.enabled = false;
    this.offsets = new Map();   // viewport id -> offset of its position from the leader's
    this.busy = false;
  }

  /** Turn on for `viewports`, measuring offsets from `leader`. */
  enable(viewports, leader) {
    this.enabled = true;
    this.offsets.clear();
    const base = leader?.image?.sliceDistance;
    for (const vp of viewports) {
      const d = vp.image?.sliceDistance;
      const sameFor = vp.image && leader?.image && vp.image.frameOfReferenceUid &&
        vp.image.frameOfReferenceUid === leader.image.frameOfReferenceUid;
      this.offsets.set(vp.id, sameFor || base === undefined || d === undefined || d === null ? 0 : d - base);
    }
    if (leader) this.follow(leader, viewports);
  }

  disable() { this.enabled = false; this.offsets.clear(); }

  /** After `leader` moved: move every other parallel viewport to the same position. */
  follow(leader, viewports) {
    if (!this.enabled || this.busy || !leader.image || leader.image.sliceDistance === null ||
        leader.image.sliceDistance === undefined) return;
    this.busy = true;
    try {
      const n0 = normalOf(leader.image.orientation);
      const base = leader.image.sliceDistance - (this.offsets.get(leader.id) || 0);
      for (const vp of viewports) {
        if (vp === leader || !vp.series || !vp.image?.orientation) continue;
        const n1 = normalOf(vp.image.orientation);
        if (Math.abs(n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2]) < 0.99) continue;   // not parallel
        // Opposite normals count distance the other way.
        const sign = n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2] > 0 ? 1 : -1;
        const target = sign * base + (this.offsets.get(vp.id) || 0);
        const i = nearestByPosition(vp.series, target);
        if (i >= 0 && i !== vp.index) vp.setIndex(i);
      }
    } finally {
      this.busy = false;
    }
  }
}
