/** The reference's logN table covers positions 0..32766; a longer sequence crashes it, so we refuse it. */
export const MAX_POSITIONS = 32767;
