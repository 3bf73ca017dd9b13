"""CelebA constants shared by the real source, the synthetic twin and the CIE study.

Element schema (real and synthetic alike):
  image: uint8 [H, W, 3] (real: aligned 218x178; resized by the pipeline to dataset.image_size)
  attributes: int32 [40], 0/1, in ATTRIBUTES order (list_attr_celeba.txt's column order)
  label: int32, attributes[ATTRIBUTES.index(dataset.label_attribute)] (default Blond_Hair)
  id: int32, the example's index in its split
"""
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)
assert len(ATTRIBUTES) == 40

# Official partition (list_eval_partition.txt): 0 train, 1 validation, 2 test.
PARTITIONS = {"train": 0, "validation": 1, "test": 2}
